"""Receipt identity, CDP version reuse and current-status precedence on traffic from outside.

On the real broker and database: receipts differing only in their correlation id are two facts
in any order; a CDP version reused with other content is dead-lettered ``version_conflict``
whether or not the first is in the same batch; and the current status follows the provider's
time (a bounce after "delivered" is current) as a function of the set of facts alone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from leo_activation.codec import make_codec
from leo_activation.contracts import from_json
from leo_activation.dev.stack import Endpoints
from leo_activation.ops.digest import state_digest
from leo_activation.producers.profile_keys import KeyRing
from leo_activation.producers.publish import publish as publish_records
from leo_activation.sealing import unseal
from leo_activation.settings import Settings
from tests.fix_app import deployment_settings, drain, read_topic, share_keys
from tests.fix_db import DbUrls, fresh_database, make_tenant, tenant_tx

T0 = datetime(2026, 5, 1, tzinfo=UTC)
Message = dict[str, Any]
TENANT = str(uuid.uuid5(uuid.NAMESPACE_OID, "test-receipt-truth"))
DELIVERY = str(uuid.uuid5(uuid.NAMESPACE_OID, "test-receipt-truth:delivery"))
PROFILE = str(uuid.uuid5(uuid.NAMESPACE_OID, "test-receipt-truth:profile"))


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def register() -> Message:
    return {"type": "tenant_register", "tenant_id": TENANT, "tenant_name": "T",
            "occurred_at": at(0)}  # fmt: skip


def receipt(status: str, minutes: float, correlation_id: str | None = None) -> Message:
    return {"tenant_id": TENANT, "delivery_id": DELIVERY, "provider": "sendgrid",
            "provider_message_id": "sg-1", "status": status, "occurred_at": at(minutes),
            "destination": "a@example.com", "channel": "email", "provider_response": {},
            "correlation_id": correlation_id}  # fmt: skip


def upsert(email: str) -> Message:
    return {"type": "profile_upsert", "tenant_id": TENANT, "profile_id": PROFILE, "version": 3,
            "occurred_at": at(1), "email": email, "raw_attributes": {}}  # fmt: skip


def publish(settings: Settings, topic: str, messages: list[Message]) -> None:
    publish_records(settings, topic, [from_json(topic, m) for m in messages])


def fetch(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, TENANT):
        return conn.execute(sql).fetchall()


def dead_letters(settings: Settings) -> list[Message]:
    codec = make_codec(None)
    messages = read_topic(settings, "dead-letters")
    return [codec.decode("dead-letters", m.value())[1] for m in messages]


# ------------------------------------------------------------------ receipt identity
def test_receipts_differing_only_in_correlation_id_are_two_facts_in_either_order(
    stack: Endpoints, db_template: str, topic_prefix: str
) -> None:
    first, second = receipt("delivered", 5, "gw-b"), receipt("delivered", 5, "gw-a")
    digests, rows = [], []
    with fresh_database(stack, db_template) as a, fresh_database(stack, db_template) as b:
        for i, (urls, order) in enumerate([(a, [first, second]), (b, [second, first])]):
            s = deployment_settings(stack, urls, f"{topic_prefix}o{i}.")
            publish(s, "commands", [register()])
            publish(s, "receipts", order)
            drain(s)
            digests.append(state_digest(s, uuid.UUID(TENANT))[0])
            rows.append(fetch(s, "SELECT log_id, correlation_id FROM delivery_log ORDER BY 2"))
    assert digests[0] == digests[1]
    assert rows[0] == rows[1]
    assert [c for _, c in rows[0]] == ["gw-a", "gw-b"]


# ------------------------------------------------------------------ CDP version reuse
def _version_conflict_case(settings: Settings, *, one_batch: bool) -> tuple[str, list[Message]]:
    publish(settings, "commands", [register()])
    # the first and the reuse in one batch, or in two; then an exact repeat of the first
    if one_batch:
        publish(settings, "profile-changes", [upsert("first@example.com"),
                                              upsert("second@example.com")])  # fmt: skip
    else:
        publish(settings, "profile-changes", [upsert("first@example.com")])
        drain(settings)
        publish(settings, "profile-changes", [upsert("second@example.com")])
    drain(settings)
    publish(settings, "profile-changes", [upsert("first@example.com")])
    drain(settings)
    letters = dead_letters(settings)
    # only the reuse with other content; the exact repeat after it is a duplicate
    assert [d["error_class"] for d in letters] == ["version_conflict"]
    _, reuse = make_codec(None).decode("profile-changes", letters[0]["original_value"])
    assert opened(settings, reuse["email_sealed"]) == "second@example.com"
    assert "version 3" in letters[0]["reason"]
    # the version a join pins (and a dispatch reads its destination from) is the first one only
    [(version, sealed)] = fetch(settings, "SELECT version, email_sealed FROM cdp_profile_version")
    assert (version, opened(settings, sealed)) == (3, "first@example.com")
    [(current,)] = fetch(settings, "SELECT email_sealed FROM cdp_profiles")
    assert opened(settings, current) == "first@example.com"
    return state_digest(settings, uuid.UUID(TENANT))[0], letters


def opened(settings: Settings, sealed: bytes) -> str:
    """An email sealed by publish, opened with the profile's key from the keys topic."""
    _, data_key = KeyRing.load(settings).keys[(uuid.UUID(TENANT), uuid.UUID(PROFILE))]
    return unseal(data_key, "email", sealed)


def test_a_reused_cdp_version_is_refused_within_one_batch_and_across_batches(
    stack: Endpoints, db_template: str, topic_prefix: str
) -> None:
    with fresh_database(stack, db_template) as a, fresh_database(stack, db_template) as b:
        one = deployment_settings(stack, a, f"{topic_prefix}one.")
        two = deployment_settings(stack, b, f"{topic_prefix}two.")
        together = _version_conflict_case(one, one_batch=True)
        share_keys(one, two)  # the same profile versions are the same bytes in both
        apart = _version_conflict_case(two, one_batch=False)
    assert together[0] == apart[0]


# ------------------------------------------------------------------ status precedence
def test_a_bounce_after_delivered_is_the_current_status(settings: Settings) -> None:
    publish(settings, "commands", [register()])
    # the bounce is published first: arrival order must not matter, only provider time
    publish(settings, "receipts", [receipt("bounced", 300), receipt("sent", 1),
                                   receipt("delivered", 2)])  # fmt: skip
    drain(settings)
    status = "SELECT current_status, reached_delivered, had_failure FROM delivery_status_current"
    assert fetch(settings, status) == [("bounced", True, True)]


LADDER = {"sent": 1, "delivered": 2, "opened": 3, "clicked": 4}
PRECEDENCE = {"queued": 0, "suppressed": 0, **LADDER, "failed": 5, "bounced": 5,
              "complained": 6, "unsubscribed": 6}  # fmt: skip


def expected_current(facts: list[tuple[uuid.UUID, str, datetime]]) -> uuid.UUID:
    """The README's rule, written out independently of the view."""
    receipts = [f for f in facts if f[1] not in ("queued", "suppressed")]
    withdrawn = [f for f in facts if f[1] in ("complained", "unsubscribed")]
    candidates = withdrawn or receipts or facts
    ladder_at = max((t for _, s, t in facts if s in LADDER), default=None)

    def key(f: tuple[uuid.UUID, str, datetime]) -> tuple[datetime, int, uuid.UUID]:
        log_id, status, t = f
        return (ladder_at if status in LADDER and ladder_at else t, PRECEDENCE[status], log_id)

    return max(candidates, key=key)[0]


facts_strategy = st.lists(
    st.tuples(st.sampled_from(sorted(PRECEDENCE)), st.integers(min_value=0, max_value=6)),
    min_size=1, max_size=6, unique=True,
)  # fmt: skip


TENANTS = [uuid.uuid5(uuid.NAMESPACE_OID, f"test-receipt-truth:{i}") for i in range(2)]


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(facts=facts_strategy, data=st.data())
def test_current_status_is_a_function_of_the_set_of_facts(
    db: DbUrls, facts: list[tuple[str, int]], data: st.DataObject
) -> None:
    """The same facts inserted in two orders (into two tenants, so the log ids can be equal)
    give the same current fact, and it is the one the rule names."""
    delivery = uuid.uuid4()  # each example its own delivery (the log is append-only)
    rows = [(uuid.uuid5(delivery, f"{s}{m}"), s, T0 + timedelta(hours=m)) for s, m in facts]
    with psycopg.connect(db.app_url) as conn:
        seen = []
        for tenant in TENANTS:
            with tenant_tx(conn, tenant):
                known = conn.execute("SELECT count(*) FROM tenant").fetchone()
            if known == (0,):
                make_tenant(db.app_url, tenant, "T")
            with tenant_tx(conn, tenant):
                for log_id, status, t in data.draw(st.permutations(rows)):
                    conn.execute(
                        "INSERT INTO delivery_log (tenant_id, log_id, delivery_id,"
                        " delivery_status, provider, sent_at) VALUES (%s, %s, %s, %s, 'p', %s)",
                        (tenant, log_id, delivery, status, t),
                    )
                seen.append(conn.execute(
                    "SELECT current_log_id FROM delivery_status_current WHERE delivery_id = %s",
                    (delivery,),
                ).fetchone())  # fmt: skip
    assert seen[0] == seen[1] == (expected_current(rows),)


def test_the_rule_on_named_cases(db: DbUrls) -> None:
    """Stories spelled out, through the view: ladder facts share their latest time, a later
    failure wins, a later successful retry wins, a complaint or unsubscribe stays, the fan-out's
    facts yield."""
    h = [T0 + timedelta(hours=n) for n in range(5)]
    cases = [
        ([("delivered", h[1]), ("bounced", h[3])], "bounced"),
        ([("bounced", h[1]), ("sent", h[2]), ("delivered", h[3])], "delivered"),
        ([("opened", h[2]), ("delivered", h[3])], "opened"),
        ([("opened", h[1]), ("bounced", h[2]), ("delivered", h[3])], "opened"),
        ([("clicked", h[1]), ("complained", h[4])], "complained"),
        ([("unsubscribed", h[1]), ("clicked", h[4])], "unsubscribed"),
        ([("bounced", h[1]), ("opened", h[2])], "opened"),
        ([("queued", h[3]), ("sent", h[1])], "sent"),
        ([("delivered", h[2]), ("bounced", h[2])], "bounced"),
    ]
    tenant = TENANTS[0]
    make_tenant(db.app_url, tenant, "T")
    got = []
    with psycopg.connect(db.app_url) as conn, tenant_tx(conn, tenant):
        for facts, _ in cases:
            delivery = uuid.uuid4()
            for status, t in facts:
                conn.execute(
                    "INSERT INTO delivery_log (tenant_id, log_id, delivery_id, delivery_status,"
                    " provider, sent_at) VALUES (%s, %s, %s, %s, 'p', %s)",
                    (tenant, uuid.uuid4(), delivery, status, t),
                )
            row = conn.execute(
                "SELECT current_status FROM delivery_status_current WHERE delivery_id = %s",
                (delivery,),
            ).fetchone()
            assert row is not None
            got.append(row[0])
    assert got == [expected for _, expected in cases]
