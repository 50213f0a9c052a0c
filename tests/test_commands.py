"""The activation commands and the dispatch fan-out on the real broker and database.

Each test publishes a few tens of hand-written messages, drains them with the real engine and
checks the rows, the delivery requests and the dead letters. The ids come from
:mod:`leo_activation.ids`, so the expectations are computed, not copied.
"""

from __future__ import annotations

import hashlib
import io
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import fastavro
import psycopg
import pytest

from leo_activation import ids
from leo_activation.codec import SINGLE_OBJECT_MAGIC, catalog, make_codec
from leo_activation.consumers import dispatch
from leo_activation.contracts import from_json
from leo_activation.kafka import message_key
from leo_activation.ops.digest import state_digest
from leo_activation.producers import TopicProducer
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_app import drain, read_topic, totals
from tests.fix_db import tenant_tx

# on a single PostgreSQL and on Citus (tests/fix_backends.py)
pytestmark = pytest.mark.backends

T0 = datetime(2026, 3, 1, tzinfo=UTC)
Message = dict[str, Any]


# ------------------------------------------------------------------------------------ helpers
def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def tenant_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"test-commands:{name}"))


def profile_uuid(tenant: str, n: int) -> str:
    return str(uuid.uuid5(uuid.UUID(tenant), f"profile-{n}"))


def cmd(kind: str, tenant: str, minute: float = 0, **fields: Any) -> Message:
    return {"type": kind, "tenant_id": tenant, "occurred_at": at(minute), **fields}


def send(settings: Settings, topic: str, messages: list[Message]) -> None:
    publish(settings, topic, [from_json(topic, m) for m in messages])


@contextmanager
def tenant_db(settings: Settings, tenant: str) -> Iterator[psycopg.Connection[Any]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, tenant):
        yield conn


def query(
    settings: Settings, tenant: str, sql: LiteralString, *params: Any
) -> list[tuple[Any, ...]]:
    with tenant_db(settings, tenant) as conn:
        return conn.execute(sql, params).fetchall()


def dead_letters(settings: Settings) -> list[Message]:
    codec = make_codec(None)
    letters = [
        codec.decode("dead-letters", m.value())[1] for m in read_topic(settings, "dead-letters")
    ]
    return sorted(letters, key=lambda d: (d["original_topic"], d["original_offset"]))


def delivery_requests(settings: Settings) -> list[Message]:
    codec = make_codec(None)
    return [
        codec.decode("delivery-requests", m.value())[1]
        for m in read_topic(settings, "delivery-requests")
    ]


def register(tenant: str, name: str = "T") -> Message:
    return cmd("tenant_register", tenant, tenant_name=name)


def story(tenant: str, *, segment: str, as_of: int, channel: str = "email") -> list[Message]:
    """Campaign, event, snapshot request, agent decision and dispatch of one tenant."""
    refs = {"campaign_code": "C1", "event_key": "E1"}
    snap = {"segment_key": segment, "as_of_sequence": as_of}
    return [
        cmd("campaign_define", tenant, 1, campaign_code="C1", campaign_name="Spring"),
        cmd("event_define", tenant, 2, **refs, event_name="Blast", event_type=channel,
            event_channel=channel, status="active"),
        cmd("snapshot_request", tenant, 3, **snap),
        cmd("agent_task_record", tenant, 4, task_key="plan-1", agent_name="planner",
            task_type="plan", **refs, **snap, reasoning_summary="members first",
            reasoning_trace={"steps": ["pick segment", "dispatch"]}, correlation_id="corr-1"),
        cmd("dispatch_request", tenant, 5, dispatch_key="d1", **refs, **snap, task_key="plan-1",
            correlation_id="corr-1"),
    ]  # fmt: skip


def upsert(tenant: str, n: int, version: int, **fields: Any) -> Message:
    message: Message = {
        "type": "profile_upsert", "tenant_id": tenant, "profile_id": profile_uuid(tenant, n),
        "version": version, "occurred_at": at(version), "email": f"p{n}.v{version}@example.com",
        "mobile_number": f"+849000000{n:02d}", "raw_attributes": {},
    }  # fmt: skip
    return {**message, **fields}


def change(
    tenant: str, segment: str, sequence: int, n: int, action: str = "join", *, pin: int | None = 1
) -> Message:
    message: Message = {
        "type": "segment_membership_change", "tenant_id": tenant, "segment_key": segment,
        "sequence": sequence, "profile_id": profile_uuid(tenant, n), "action": action,
        "occurred_at": at(sequence),
    }  # fmt: skip
    if pin is not None:
        message["profile_version"] = pin
    return message


def encode_v1_membership_change(record: Message) -> tuple[bytes, bytes]:
    """(key, value) of a membership change as a v1 producer writes it (no profile_version)."""
    v1 = next(
        v for v in catalog().versions if v.name == "SegmentMembershipChange" and v.version == 1
    )
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1.parsed, record)
    return message_key("profile-changes", record), SINGLE_OBJECT_MAGIC + v1.fingerprint + (
        body.getvalue()
    )


def member_digest(profiles: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(profiles)).encode()).hexdigest()


# ------------------------------------------------------------------------------------ commands
def test_every_command_kind_is_applied(settings: Settings) -> None:
    t = tenant_uuid("kinds")
    embedding = [round(i / 384, 4) for i in range(384)]
    task = {
        "task_key": "plan-1", "agent_name": "planner", "task_type": "plan",
        "campaign_code": "C1", "event_key": "E1", "segment_key": "s", "as_of_sequence": 0,
        "reasoning_summary": "why", "reasoning_trace": {"b": 2, "a": [1]},
    }  # fmt: skip
    messages = [
        register(t),
        cmd("campaign_define", t, 1, campaign_code="C1", campaign_name="v1", objective="o1"),
        cmd("campaign_define", t, 5, campaign_code="C1", campaign_name="v2", objective="o2",
            start_at=at(0), end_at=at(60)),
        cmd("campaign_define", t, 3, campaign_code="C1", campaign_name="late and older"),
        cmd("campaign_status_change", t, 10, campaign_code="C1", status="paused"),
        cmd("campaign_status_change", t, 7, campaign_code="C1", status="completed"),  # older
        cmd("event_define", t, 2, campaign_code="C1", event_key="E1", event_name="Blast",
            event_type="email", event_channel="email", embedding=embedding),
        cmd("event_status_change", t, 20, campaign_code="C1", event_key="E1", status="cancelled"),
        cmd("event_status_change", t, 15, campaign_code="C1", event_key="E1", status="active"),
        cmd("snapshot_request", t, 3, segment_key="s", as_of_sequence=0),
        cmd("agent_task_record", t, 4, **task, correlation_id="c-1"),
        cmd("agent_task_record", t, 4, **task, correlation_id="c-2"),  # a copy: duplicate
        cmd("agent_task_record", t, 4, **{**task, "reasoning_summary": "changed my mind"}),
        cmd("agent_task_status_change", t, 30, task_key="plan-1", status="failed",
            reasoning_summary="provider down"),
        cmd("dispatch_request", t, 40, dispatch_key="d1", campaign_code="C1", event_key="E1",
            segment_key="s", as_of_sequence=0, task_key="plan-1", correlation_id="c-9"),
        cmd("event_define", t, 41, campaign_code="C1", event_key="E2", event_name="Other",
            event_type="push", event_channel="push"),
        # plan-1 decided on E1: it cannot be the decision behind a dispatch of E2
        cmd("dispatch_request", t, 42, dispatch_key="d2", campaign_code="C1", event_key="E2",
            segment_key="s", as_of_sequence=0, task_key="plan-1"),
    ]  # fmt: skip
    send(settings, "commands", messages)
    stats = totals(drain(settings))
    assert stats.consumed == len(messages)
    assert (stats.applied, stats.duplicates, stats.dead_lettered) == (13, 2, 2)

    campaign = ids.campaign_id(t, "C1")
    assert query(
        settings, t, "SELECT campaign_name, objective, status, updated_at = %s FROM campaign",
        T0 + timedelta(minutes=5),
    ) == [("v2", "o2", "paused", True)]  # fmt: skip
    assert query(
        settings, t,
        "SELECT campaign_id, changed_at, status FROM campaign_status_history ORDER BY changed_at",
    ) == [
        (campaign, T0 + timedelta(minutes=m), s)
        for m, s in ((1, "active"), (5, "active"), (7, "completed"), (10, "paused"))
    ]  # fmt: skip
    event = ids.event_id(t, "C1", "E1")
    [(event_id, status, dims, first, last)] = query(
        settings, t,
        "SELECT event_id, status, vector_dims(embedding), (embedding::real[])[1], "
        "(embedding::real[])[384] FROM marketing_event WHERE event_key = 'E1'",
    )  # fmt: skip
    assert (event_id, status, dims, first) == (event, "cancelled", 384, 0.0)
    assert math.isclose(last, embedding[-1], rel_tol=1e-6)
    assert len(query(settings, t, "SELECT 1 FROM marketing_event_status_history")) == 4

    task_id = ids.task_id(t, "plan-1")
    assert query(
        settings, t,
        "SELECT task_id, campaign_id, event_id, snapshot_id, reasoning_trace, status, "
        "correlation_id FROM agent_task",
    ) == [(task_id, campaign, event, ids.snapshot_id(t, "s", 0), {"a": [1], "b": 2},
           "completed", "c-1")]  # fmt: skip
    assert query(settings, t, "SELECT status, reasoning_summary FROM agent_task_status") == [
        ("failed", "provider down")
    ]
    # the snapshot at sequence 0 sealed empty; the dispatch recorded the event's cancellation as
    # of its command and fanned out to nobody
    assert query(
        settings, t,
        "SELECT dispatch_id, campaign_id, channel, suppress_reason, correlation_id, state "
        "FROM dispatch",
    ) == [(ids.dispatch_id(t, "d1"), campaign, "email", "event E1 is cancelled", "c-9",
           "fanned_out")]  # fmt: skip
    task_conflict, dispatch_conflict = dead_letters(settings)
    assert task_conflict["error_class"] == dispatch_conflict["error_class"] == "conflict"
    assert task_conflict["reason"] == (
        "agent task plan-1 is already recorded with different content (append-only)"
    )
    assert dispatch_conflict["reason"] == (
        "dispatch d2: agent task plan-1 decided on another event or snapshot"
    )


def test_unknown_references_are_dead_lettered_with_a_reason(settings: Settings) -> None:
    t = tenant_uuid("unknown")
    messages = [
        register(t),
        cmd("campaign_status_change", t, 1, campaign_code="nope", status="paused"),
        cmd("event_define", t, 2, campaign_code="nope", event_key="E", event_name="x",
            event_type="email", event_channel="email"),
        cmd("campaign_define", t, 3, campaign_code="C1", campaign_name="c"),
        cmd("event_status_change", t, 4, campaign_code="C1", event_key="E9", status="active"),
        cmd("agent_task_record", t, 5, task_key="k", agent_name="a", task_type="plan",
            campaign_code="C1", event_key="E9", segment_key="s", as_of_sequence=7),
        cmd("agent_task_status_change", t, 6, task_key="never", status="completed"),
        cmd("dispatch_request", t, 7, dispatch_key="d", campaign_code="C1", event_key="E9",
            segment_key="s", as_of_sequence=7, task_key="never"),
        cmd("agent_task_record", t, 8, task_key="k2", agent_name="a", task_type="plan",
            event_key="E9"),  # an event key without its campaign code
    ]  # fmt: skip
    send(settings, "commands", messages)
    stats = totals(drain(settings))
    assert (stats.applied, stats.dead_lettered) == (2, 7)
    letters = dead_letters(settings)
    assert [d["error_class"] for d in letters] == ["unknown_reference"] * 6 + ["invalid"]
    reasons = [d["reason"] for d in letters]
    assert reasons[0] == "campaign status change names unknown campaign nope"
    assert reasons[1] == "event nope/E names unknown campaign nope"
    assert reasons[2] == "event status change names unknown event C1/E9"
    assert reasons[3] == "agent task k names unknown event C1/E9, snapshot request s@7"
    assert reasons[4] == "agent task status change names unknown agent task never"
    assert reasons[5] == (
        "dispatch d names unknown event C1/E9, snapshot request s@7, agent task never"
    )
    assert all(d["tenant_id"] == t for d in letters)
    assert query(settings, t, "SELECT count(*) FROM agent_task") == [(0,)]


def test_a_reference_to_another_tenants_object_is_refused(settings: Settings) -> None:
    a, b = tenant_uuid("cross-a"), tenant_uuid("cross-b")
    send(settings, "commands", [register(b, "B"), *story(b, segment="b-seg", as_of=0)])
    assert totals(drain(settings)).dead_lettered == 0
    b_state, _ = state_digest(settings, tenant=uuid.UUID(b))

    # A has its own campaign, event and decision, but names B's snapshot request
    refs = {"campaign_code": "C1", "event_key": "E1"}
    mine = story(a, segment="a-seg", as_of=0)
    send(settings, "commands", [
        register(a, "A"), mine[0], mine[1],
        cmd("agent_task_record", a, 4, task_key="plan-1", agent_name="planner",
            task_type="plan", **refs),
        cmd("agent_task_record", a, 4, task_key="plan-2", agent_name="planner",
            task_type="plan", **refs, segment_key="b-seg", as_of_sequence=0),
        cmd("dispatch_request", a, 5, dispatch_key="d1", **refs, segment_key="b-seg",
            as_of_sequence=0, task_key="plan-1"),
    ])  # fmt: skip
    stats = totals(drain(settings))
    assert stats.dead_lettered == 2
    letters = dead_letters(settings)
    assert [(d["error_class"], d["tenant_id"]) for d in letters] == [("unknown_reference", a)] * 2
    assert "snapshot request b-seg@0" in letters[0]["reason"]
    assert "snapshot request b-seg@0" in letters[1]["reason"]
    assert query(settings, a, "SELECT count(*) FROM dispatch") == [(0,)]
    assert state_digest(settings, tenant=uuid.UUID(b))[0] == b_state


# ------------------------------------------------------------------------------------ snapshots
def test_snapshot_seals_only_once_every_change_up_to_the_watermark_arrived(
    settings: Settings,
) -> None:
    t = tenant_uuid("seal")
    send(settings, "commands", [
        register(t),
        cmd("snapshot_request", t, 1, segment_key="s", as_of_sequence=4, expected_count=2,
            expected_digest=member_digest([profile_uuid(t, 1), profile_uuid(t, 2)])),
        cmd("snapshot_request", t, 1, segment_key="s", as_of_sequence=3, expected_count=5),
    ])  # fmt: skip
    drain(settings)
    sequence = [
        change(t, "s", 1, 1, pin=1),
        change(t, "s", 2, 2, pin=2),
        change(t, "s", 3, 3),
        change(t, "s", 4, 3, "leave"),
        change(t, "s", 5, 4),  # beyond both watermarks
    ]
    send(settings, "profile-changes", [sequence[i] for i in (0, 1, 3)])
    drain(settings)
    assert query(settings, t, "SELECT state FROM segment_snapshot_request") == [("pending",)] * 2
    assert query(settings, t, "SELECT count(*) FROM segment_snapshot") == [(0,)]

    send(settings, "profile-changes", [sequence[i] for i in (2, 4)])
    drain(settings)
    sealed = ids.snapshot_id(t, "s", 4)
    assert query(
        settings, t,
        "SELECT snapshot_id, state, state_detail FROM segment_snapshot_request "
        "ORDER BY as_of_sequence",
    ) == [
        (ids.snapshot_id(t, "s", 3), "rejected", "member count 3 differs from the expected 5"),
        (sealed, "sealed", None),
    ]  # fmt: skip
    assert query(settings, t, "SELECT snapshot_id, member_count FROM segment_snapshot") == [
        (sealed, 2)
    ]
    assert sorted(
        query(settings, t, "SELECT profile_id::text, profile_version FROM segment_snapshot_member")
    ) == sorted([(profile_uuid(t, 1), 1), (profile_uuid(t, 2), 2)])


# ------------------------------------------------------------------------------------ dispatch
def test_dispatch_fans_out_one_request_per_member_from_the_pinned_profile_version(
    settings: Settings,
) -> None:
    """Two tenants, same story, opposite topic order: A's CDP changes are applied before its
    commands (fan-out when the dispatch arrives), B's after (fan-out when the snapshot seals).
    Both must give the same deliveries; re-dispatch and replay must add nothing."""

    def cdp(t: str) -> tuple[list[Message], list[tuple[bytes, bytes]]]:
        v1_change = {
            "tenant_id": t, "segment_key": "s", "sequence": 3, "profile_id": profile_uuid(t, 2),
            "action": "join", "occurred_at": T0, "correlation_id": None,
        }  # fmt: skip
        return [
            # p0 joined at version 1 and changed email at version 2: the join's version counts
            upsert(t, 0, 1), change(t, "s", 1, 0, pin=1), upsert(t, 0, 2),
            upsert(t, 1, 1, email=None), change(t, "s", 2, 1, pin=1),  # no email: suppressed
            upsert(t, 2, 1),  # joined through a v1 producer (below): pins nothing, suppressed
            upsert(t, 3, 1), change(t, "s", 4, 3, pin=1),
            upsert(t, 4, 1), change(t, "s", 5, 4, pin=1), change(t, "s", 6, 4, "leave"),
        ], [encode_v1_membership_change(v1_change)]  # fmt: skip

    def publish_cdp(t: str) -> None:
        messages, raw = cdp(t)
        send(settings, "profile-changes", messages)
        producer = TopicProducer(settings)
        for key, value in raw:
            producer.produce_raw(settings.topic("profile-changes"), key, value)
        producer.flush()

    a, b = tenant_uuid("fan-a"), tenant_uuid("fan-b")
    send(
        settings, "commands", [register(a, "A"), register(b, "B"), *story(b, segment="s", as_of=6)]
    )
    publish_cdp(a)
    drain(settings)
    assert query(settings, b, "SELECT state FROM dispatch") == [("waiting_for_snapshot",)]
    send(settings, "commands", story(a, segment="s", as_of=6))
    publish_cdp(b)
    assert totals(drain(settings)).dead_lettered == 0

    requests = delivery_requests(settings)
    for t in (a, b):
        event = ids.event_id(t, "C1", "E1")
        dispatch_id = ids.dispatch_id(t, "d1")
        rows = query(
            settings, t,
            "SELECT log_id, delivery_id, profile_id::text, delivery_status, "
            "coalesce(destination, CASE WHEN destination_sealed IS NOT NULL THEN 'sealed' END), "
            "reason, "
            "profile_version, dispatch_id, task_id, snapshot_id, correlation_id, sent_at "
            "FROM delivery_log ORDER BY profile_id",
        )  # fmt: skip
        by_profile = {r[2]: r for r in rows}
        expected = {
            # the destination is copied sealed from the pinned version (publish sealed it); the
            # requests below carry it opened
            0: ("queued", "sealed", None, 1),
            1: ("suppressed", None, "profile version 1 has no email address for channel email", 1),
            2: ("suppressed", None, dispatch.NO_PIN_REASON, None),
            3: ("queued", "sealed", None, 1),
        }
        assert {p: by_profile[profile_uuid(t, p)][3:7] for p in expected} == expected
        assert len(rows) == 4  # p4 left before the watermark
        for log_id, delivery, profile, status, *_, dispatched, task, snapshot, corr, sent in rows:
            assert delivery == ids.delivery_id(t, event, profile)
            assert log_id == ids.delivery_fact_id(t, delivery, dispatch.delivery_fact(
                status, dispatch_id))  # fmt: skip
            assert (dispatched, task, snapshot) == (
                dispatch_id,
                ids.task_id(t, "plan-1"),
                ids.snapshot_id(t, "s", 6),
            )
            assert (corr, sent) == ("corr-1", T0 + timedelta(minutes=5))
        mine = sorted(
            (str(r["delivery_id"]), str(r["profile_id"]), r["destination"])
            for r in requests
            if str(r["tenant_id"]) == t
        )
        assert mine == sorted(
            (str(by_profile[profile_uuid(t, p)][1]), profile_uuid(t, p), f"p{p}.v1@example.com")
            for p in (0, 3)
        )
        assert query(settings, t, "SELECT state FROM dispatch") == [("fanned_out",)]
    assert len(requests) == 4
    first = {(str(r["tenant_id"]), str(r["delivery_id"])) for r in requests}

    # re-dispatch (same key, later) and a replay of every topic: no new request, same state
    before, _ = state_digest(settings)
    send(settings, "commands", [
        cmd("dispatch_request", a, 50, dispatch_key="d1", campaign_code="C1", event_key="E1",
            segment_key="s", as_of_sequence=6, task_key="plan-1")
    ])  # fmt: skip
    again = totals(drain(settings))
    assert (again.applied, again.duplicates, again.dead_lettered) == (0, 1, 0)
    replay = totals(drain(settings, group=settings.group_id + "-replay"))
    assert (replay.applied, replay.dead_lettered) == (0, 0)
    assert state_digest(settings)[0] == before
    requests = delivery_requests(settings)
    assert len(requests) == 4
    assert {(str(r["tenant_id"]), str(r["delivery_id"])) for r in requests} == first


def test_dispatch_waits_for_a_pinned_profile_version_to_arrive(settings: Settings) -> None:
    t = tenant_uuid("wait")
    send(settings, "commands", [register(t), *story(t, segment="s", as_of=2, channel="sms")])
    # p1's join pins version 3, which the CDP has not published yet
    send(settings, "profile-changes", [
        upsert(t, 0, 1), change(t, "s", 1, 0), upsert(t, 1, 2), change(t, "s", 2, 1, pin=3),
    ])  # fmt: skip
    drain(settings)
    assert query(settings, t, "SELECT state FROM segment_snapshot_request") == [("sealed",)]
    assert query(settings, t, "SELECT state FROM dispatch") == [("waiting_for_snapshot",)]
    assert delivery_requests(settings) == []

    send(settings, "profile-changes", [upsert(t, 1, 3, mobile_number="+84999")])
    drain(settings)
    requests = delivery_requests(settings)
    assert sorted((str(r["profile_id"]), r["destination"], r["channel"]) for r in requests) == (
        sorted([(profile_uuid(t, 0), "+84900000000", "sms"), (profile_uuid(t, 1), "+84999", "sms")])
    )
    assert query(settings, t, "SELECT state FROM dispatch") == [("fanned_out",)]


def test_a_bad_embedding_is_dead_lettered(settings: Settings) -> None:
    t = tenant_uuid("embedding")
    send(settings, "commands", [
        register(t), cmd("campaign_define", t, 1, campaign_code="C1", campaign_name="c"),
    ])  # fmt: skip
    event: Message = {
        "tenant_id": t, "campaign_code": "C1", "event_name": "x", "event_type": "push",
        "event_channel": "push", "start_at": None, "end_at": None, "status": "planned",
        "occurred_at": T0, "correlation_id": None,
    }  # fmt: skip
    producer = TopicProducer(settings)  # straight to Avro: from_json would refuse these
    for key, vector in (
        ("short", [0.5] * 383),
        ("nan", [0.5] * 383 + [math.nan]),
        ("good", [0.5] * 384),
    ):
        producer.send("commands", "event_define", {**event, "event_key": key, "embedding": vector})
    producer.flush()
    stats = totals(drain(settings))
    assert (stats.applied, stats.dead_lettered) == (3, 2)
    letters = dead_letters(settings)
    assert [d["error_class"] for d in letters] == ["bad_embedding", "bad_embedding"]
    assert "383 dimensions" in letters[0]["reason"]
    assert "NaN" in letters[1]["reason"]
    assert query(settings, t, "SELECT event_key, vector_dims(embedding) FROM marketing_event") == [
        ("good", 384)
    ]
