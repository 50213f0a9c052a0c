"""A database that cannot do what the product needs stops the consumer; bad data does not.

Each class of "this database cannot do it" (a privilege revoked from the application role, a
table or a function gone, a feature the server refuses for the product's statement) is fed
through a real ``leo-activation consume`` on the real database: the process exits 1 with one line
naming the SQLSTATE, commits no offset and dead-letters nothing, so the messages are still there
for a consumer on a repaired database. A row-level data error, by contrast, dead-letters its own
message only and the consumer goes on.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import conninfo

from leo_activation.contracts import from_json
from leo_activation.db import Fault, classify, connect, with_database
from leo_activation.kafka import ensure_topics
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_app import drain, read_topic, totals
from tests.fix_db import DbUrls, make_tenant
from tests.fix_faults import REPO, committed_offsets, consumer_env, delivery_rows

TENANT = uuid.UUID("3b0c8a52-52d6-4c4b-9d55-0c7f3f1e2a10")
NOW = "2026-01-02T00:00:00Z"

# SQLSTATE -> what an operator (or a migration gone wrong) did to the database, as its owner
BREAKS = {
    "42501": "REVOKE INSERT ON delivery_log FROM leo_application",
    "42P01": "ALTER TABLE delivery_log RENAME TO delivery_log_elsewhere",
    "42883": "ALTER FUNCTION leo_current_tenant() RENAME TO leo_current_tenant_elsewhere",
    # a rule on the table: the server refuses the product's INSERT ... ON CONFLICT on it
    "0A000": "CREATE RULE leo_audit AS ON INSERT TO delivery_log DO ALSO NOTIFY leo_audit",
}


def receipt(**changes: Any) -> dict[str, Any]:
    record = {"tenant_id": str(TENANT), "delivery_id": str(uuid.uuid4()), "provider": "sendgrid",
              "provider_message_id": "pm-1", "status": "sent", "occurred_at": NOW,
              "destination": "a@example.com", "channel": "email", "provider_response": "{}",
              "correlation_id": None}  # fmt: skip
    return record | changes


def publish_receipts(settings: Settings, records: list[dict[str, Any]]) -> None:
    ensure_topics(settings)
    publish(settings, "receipts", [from_json("receipts", r) for r in records])


def as_owner(admin_url: str, statement: str) -> None:
    with connect(admin_url) as conn:
        conn.execute(statement)


@pytest.mark.parametrize("sqlstate", sorted(BREAKS))
def test_a_database_that_cannot_do_it_stops_the_consumer_with_nothing_committed(
    sqlstate: str, settings: Settings, db: DbUrls, kafka_admin: AdminClient
) -> None:
    make_tenant(db.app_url, TENANT, "Acme")
    publish_receipts(settings, [receipt() for _ in range(5)])
    as_owner(db.admin_url, BREAKS[sqlstate])

    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", "consume", "--until-idle", "5"],
        env=consumer_env(settings),
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    # the JSON log lines aside, the CLI's error is one line
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("leo-activation: the database cannot do what the product needs")
    assert f"({sqlstate})" in lines[0]
    assert committed_offsets(kafka_admin, settings.group_id) == 0
    assert read_topic(settings, "dead-letters") == []


def test_a_data_error_dead_letters_only_its_own_message(settings: Settings, db: DbUrls) -> None:
    make_tenant(db.app_url, TENANT, "Acme")
    # a rule of this deployment the contract does not know: the database refuses one row
    as_owner(db.admin_url, "ALTER TABLE delivery_log ADD CONSTRAINT leo_no_poison "
                           "CHECK (provider_message_id <> 'poison')")  # fmt: skip
    good = [receipt() for _ in range(6)]
    bad = receipt(provider_message_id="poison")
    publish_receipts(settings, [*good[:3], bad, *good[3:]])

    stats = totals(drain(settings))

    assert (stats.applied, stats.dead_lettered) == (6, 1)
    assert delivery_rows(db.admin_url) == 6
    [dead] = read_topic(settings, "dead-letters")
    headers = dict(dead.headers() or [])
    assert headers["leo.dlq.error.class"] == b"db_rejected"
    assert b"leo_no_poison" in (headers["leo.dlq.reason"] or b"")


def test_the_classification_of_real_server_errors(db: DbUrls) -> None:
    """Each error as the server raises it, classified as the consumer acts on it."""
    missing_db = with_database(db.app_url, "leo_no_such_database")
    unknown_role = conninfo.make_conninfo(db.app_url, user="leo_nobody_here")
    cases = {
        "SELECT * FROM leo_no_such_table": Fault.INCAPABLE,
        "SELECT leo_no_such_function()": Fault.INCAPABLE,
        "SELECT 1/0": Fault.DATA,
        "SELECT 'x'::uuid": Fault.DATA,
        "SELECT pg_sleep(2)": Fault.TRANSIENT,  # cancelled by the statement timeout
    }
    with connect(db.app_url) as conn:
        conn.execute("SET statement_timeout = '50ms'")
        for statement, fault in cases.items():
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(statement)
            assert classify(caught.value) is fault, (statement, caught.value)
    for dsn in (missing_db, unknown_role):
        with pytest.raises(psycopg.Error) as caught:
            connect(dsn)
        assert classify(caught.value) is Fault.INCAPABLE, caught.value
    with pytest.raises(psycopg.Error) as caught:
        connect("postgresql://leo@127.0.0.1:1/leo")  # nothing listens: wait for it
    assert classify(caught.value) is Fault.TRANSIENT
