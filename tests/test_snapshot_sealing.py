"""Sealing a snapshot and tagging its members' ``cdp_profiles.segment_snapshots`` (0006).

The seal (snapshot, members, a row in the tagging queue) is one transaction; the tagging is an
``ApplyResult.follow_ups`` action in its own transaction, run by the engine before the batch's
offsets commit. These tests run the real engine on the real broker and database: the tags are
complete once a batch is processed, a crash between the seal and the tagging is repaired by the
re-delivery (whichever topic sealed the snapshot), and the state is then a clean run's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest

from leo_activation import ids
from leo_activation.consumers import snapshots
from leo_activation.contracts import from_json
from leo_activation.dev.stack import Endpoints
from leo_activation.ops.digest import state_digest
from leo_activation.producers.publish import publish as publish_records
from leo_activation.resources import sql_text
from leo_activation.settings import Settings
from tests.fix_app import deployment_settings, drain, totals
from tests.fix_db import fresh_database, tenant_tx

# on a single PostgreSQL and on Citus (tests/fix_backends.py)
pytestmark = pytest.mark.backends

T0 = datetime(2026, 4, 1, tzinfo=UTC)
Message = dict[str, Any]
SEGMENT = "vip"
N = 40  # profiles; every third one leaves again


class SimulatedCrash(Exception):
    """The process dies between the seal's commit and its tagging follow-up."""


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def tenant_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"test-snapshot-sealing:{name}"))


def profile_uuid(tenant: str, n: int) -> str:
    return str(uuid.uuid5(uuid.UUID(tenant), f"profile-{n}"))


def commands(tenant: str) -> list[Message]:
    snapshot = {"type": "snapshot_request", "tenant_id": tenant, "segment_key": SEGMENT}
    return [
        {"type": "tenant_register", "tenant_id": tenant, "tenant_name": "T", "occurred_at": at(0)},
        {**snapshot, "occurred_at": at(1), "as_of_sequence": N},
        {**snapshot, "occurred_at": at(2), "as_of_sequence": N + N // 3},
    ]


def profile_changes(tenant: str, *, upserts: bool = True) -> list[Message]:
    """Joins 1..N, then every third profile leaves (sequences N+1..); the profiles' upserts, but
    not the last five's: they arrive after the seal (``late_upserts``)."""
    joins = [
        {"type": "segment_membership_change", "tenant_id": tenant, "segment_key": SEGMENT,
         "sequence": n, "profile_id": profile_uuid(tenant, n), "action": "join",
         "occurred_at": at(n), "profile_version": 1}
        for n in range(1, N + 1)
    ]  # fmt: skip
    leaves = [
        {**joins[n - 1], "sequence": N + i, "action": "leave", "occurred_at": at(N + i)}
        for i, n in enumerate(range(3, N + 1, 3), start=1)
    ]
    return ([upsert(tenant, n) for n in range(1, N - 4)] if upserts else []) + joins + leaves


def upsert(tenant: str, n: int) -> Message:
    return {"type": "profile_upsert", "tenant_id": tenant, "profile_id": profile_uuid(tenant, n),
            "version": 1, "occurred_at": at(n), "email": f"p{n}@example.com",
            "raw_attributes": {}}  # fmt: skip


def late_upserts(tenant: str) -> list[Message]:
    return [upsert(tenant, n) for n in range(N - 4, N + 1)]


def publish(settings: Settings, topic: str, messages: list[Message]) -> None:
    publish_records(settings, topic, [from_json(topic, m) for m in messages])


def fetch(
    settings: Settings, tenant: str, sql: LiteralString, *params: Any
) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, tenant):
        return conn.execute(sql, params).fetchall()


def expected_tags(tenant: str) -> dict[uuid.UUID, list[uuid.UUID]]:
    """profile -> the snapshots it is a member of, sorted: the first has every joiner, the
    second those who did not leave."""
    t = uuid.UUID(tenant)
    first, second = ids.snapshot_id(t, SEGMENT, N), ids.snapshot_id(t, SEGMENT, N + N // 3)
    return {
        uuid.UUID(profile_uuid(tenant, n)): sorted([first] if n % 3 == 0 else [first, second])
        for n in range(1, N + 1)
    }


def assert_tagged(settings: Settings, tenant: str, profiles: int = N) -> None:
    expected = expected_tags(tenant)
    rows = fetch(settings, tenant, "SELECT profile_id, segment_snapshots FROM cdp_profiles")
    assert len(rows) == profiles
    assert {p: list(s) for p, s in rows} == {p: expected[p] for p, _ in rows}
    assert fetch(settings, tenant, "SELECT count(*) FROM segment_snapshot_tag_pending") == [(0,)]


def sealed(settings: Settings, tenant: str) -> list[tuple[Any, ...]]:
    return fetch(
        settings, tenant, "SELECT as_of_sequence, member_count FROM segment_snapshot ORDER BY 1"
    )


def crashing_tagger(
    calls: list[uuid.UUID],
) -> Callable[[uuid.UUID, uuid.UUID], Callable[[psycopg.Connection[Any]], None]]:
    def tag_members(
        tenant_id: uuid.UUID, snapshot_id: uuid.UUID
    ) -> Callable[[psycopg.Connection[Any]], None]:
        def crash(conn: psycopg.Connection[Any]) -> None:
            calls.append(snapshot_id)
            raise SimulatedCrash(f"crash before tagging {snapshot_id}")

        return crash

    return tag_members


# ------------------------------------------------------------------------------------ tests
def test_members_are_tagged_once_the_batch_is_processed(settings: Settings) -> None:
    t = tenant_uuid("tagged")
    publish(settings, "commands", commands(t))
    publish(settings, "profile-changes", profile_changes(t))
    stats = totals(drain(settings))
    assert stats.dead_lettered == 0
    assert sealed(settings, t) == [(N, N), (N + N // 3, N - N // 3)]
    assert_tagged(settings, t, profiles=N - 5)
    # profiles arriving after the seal take their snapshots from the members (profiles_upsert)
    publish(settings, "profile-changes", late_upserts(t))
    drain(settings)
    assert_tagged(settings, t)


@pytest.mark.parametrize("sealed_by", ["profile-changes", "commands"])
def test_a_crash_between_seal_and_tagging_is_repaired_by_the_redelivery(
    settings: Settings,
    *,
    stack: Endpoints,
    db_template: str,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    sealed_by: str,
) -> None:
    """The seal commits, the process dies before its tagging follow-up (so before the offsets
    commit); a restarted engine is re-delivered the messages that sealed it, which are all
    duplicates now, and must still write the tags and empty the queue."""
    t = tenant_uuid(f"crash-{sealed_by}")
    register, *requests = commands(t)
    # everything but what seals the snapshots, then (crashing) what seals them
    if sealed_by == "profile-changes":
        before, sealing = [("commands", commands(t))], ("profile-changes", profile_changes(t))
    else:
        before = [("commands", [register]), ("profile-changes", profile_changes(t))]
        sealing = ("commands", requests)
    for topic, messages in before:
        publish(settings, topic, messages)
    drain(settings)
    assert sealed(settings, t) == []

    publish(settings, *sealing)
    calls: list[uuid.UUID] = []
    with monkeypatch.context() as patch:
        patch.setattr(snapshots, "tag_members", crashing_tagger(calls))
        with pytest.raises(SimulatedCrash):
            drain(settings)
    assert calls, "no tagging follow-up was asked for"
    # the window is real: sealed and committed, tags not written, both still queued
    assert sealed(settings, t) == [(N, N), (N + N // 3, N - N // 3)]
    assert fetch(settings, t, "SELECT count(*) FROM segment_snapshot_tag_pending") == [(2,)]
    assert fetch(settings, t, "SELECT count(*) FROM cdp_profiles WHERE segment_snapshots <> '{}'")[
        0
    ] == (0,)

    # profiles arriving while the tags are pending take the snapshots from the members
    late = late_upserts(t)
    publish(settings, "profile-changes", late)
    stats = totals(drain(settings))  # same group: the crashed batch is delivered again
    assert stats.consumed >= len(sealing[1]) + 5
    # the late upserts and the data key publish made for each of their profiles
    new_keys = len({m["profile_id"] for m in late})
    assert stats.applied == 5 + new_keys, "the re-delivered messages were applied already"
    assert_tagged(settings, t)

    # the state is a clean run's: the same topics read into an empty database
    with fresh_database(stack, db_template) as clean_db:
        clean = deployment_settings(stack, clean_db, topic_prefix)
        drain(clean)
        assert_tagged(clean, t)
        assert state_digest(settings)[0] == state_digest(clean)[0]


def test_the_tagging_is_idempotent(settings: Settings) -> None:
    """Once the tags are written, the tagging statement changes no row and the follow-up (a
    second trigger of it, or a re-run) does nothing; the queue never shows in the digest."""
    t = tenant_uuid("idempotent")
    publish(settings, "commands", commands(t))
    publish(settings, "profile-changes", profile_changes(t))
    drain(settings)
    tenant = uuid.UUID(t)
    before, tables = state_digest(settings, tenant=tenant)
    assert "segment_snapshot_tag_pending" not in tables[tenant]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for snapshot in expected_tags(t)[uuid.UUID(profile_uuid(t, 1))]:
            with tenant_tx(conn, t):
                tag = conn.execute(
                    sql_text("queries/snapshots/tag_profiles.sql"),
                    {"tenant_id": tenant, "snapshot_id": snapshot},
                )
                assert tag.rowcount == 0
            with conn.transaction():
                snapshots.tag_members(tenant, snapshot)(conn)
    assert state_digest(settings, tenant=tenant)[0] == before
    assert_tagged(settings, t, profiles=N - 5)
