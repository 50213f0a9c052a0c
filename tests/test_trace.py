"""The golden rule's five answers (README): ``trace delivery`` / ``trace profile``, the analyst
views of 0004_views.sql and the sample queries, on a database populated through the real broker.

One module-scoped deployment (database + topics) is populated once: the activation corpus is
published and drained, a simulated provider answers the delivery requests (the demo's provider:
receipts in every status, a duplicate, a late receipt), and the tests only read it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from leo_activation import ids
from leo_activation.cli import main
from leo_activation.codec import make_codec
from leo_activation.db import connect, tenant_transaction
from leo_activation.dev import corpus, demo
from leo_activation.dev.stack import Endpoints
from leo_activation.resources import sql_dir
from leo_activation.settings import Settings
from tests.fix_app import deployment_settings, drain, publish_corpus, totals
from tests.fix_db import fresh_database, make_tenant
from tests.fix_stack import delete_prefixed_topics

# on a single PostgreSQL and on Citus (tests/fix_backends.py)
pytestmark = pytest.mark.backends

SEED = 11
FIVE = ("why", "what", "to_whom", "who_decided", "what_happened")
SAMPLES = sorted((sql_dir() / "samples").glob("*.sql"))


@dataclass(frozen=True)
class Activated:
    settings: Settings
    corpus: corpus.Corpus
    tenants: list[str]
    requests: list[demo.Request]
    plan: demo.ProviderPlan

    @property
    def showcase(self) -> demo.Request:
        assert self.plan.showcase is not None
        return self.plan.showcase

    def flags(self) -> list[str]:
        s = self.settings
        assert s.kafka_bootstrap is not None
        assert s.database_url is not None
        assert s.admin_database_url is not None
        return [
            "--bootstrap", s.kafka_bootstrap, "--database-url", s.database_url,
            "--admin-database-url", s.admin_database_url, "--topic-prefix", s.topic_prefix,
        ]  # fmt: skip


def populate(settings: Settings) -> Activated:
    c = corpus.build(SEED, n_tenants=2, n_profiles=10, n_receipts=0, with_activation=True)
    onboarding = corpus.Corpus(
        {"commands": [m for m in c.topics["commands"] if m["type"] == "tenant_register"]}
    )
    rest = corpus.Corpus(
        {
            "profile-changes": c.topics["profile-changes"],
            "commands": [m for m in c.topics["commands"] if m["type"] != "tenant_register"],
        }
    )
    publish_corpus(settings, onboarding)
    drain(settings, idle=1.5)
    publish_corpus(settings, rest)
    assert totals(drain(settings, idle=1.5)).dead_lettered == 0
    requests = demo.delivery_requests(settings, make_codec(None))
    assert requests, "the activation corpus fanned out no delivery requests"
    plan = demo.plan_receipts(requests)
    publish_corpus(settings, corpus.Corpus({"receipts": plan.receipts}))
    drain(settings, idle=1.5)
    publish_corpus(settings, corpus.Corpus({"receipts": plan.late}))
    drain(settings, idle=1.5)
    return Activated(settings, c, corpus.tenants(SEED, 2), requests, plan)


@pytest.fixture(scope="module")
def activated(stack: Endpoints, db_template: str, kafka_admin: AdminClient) -> Iterator[Activated]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    with fresh_database(stack, db_template) as urls:
        settings = deployment_settings(stack, urls, prefix)
        try:
            yield populate(settings)
        finally:
            delete_prefixed_topics(kafka_admin, prefix)


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def command_of(a: Activated, tenant: str, kind: str) -> dict[str, Any]:
    return next(
        m for m in a.corpus.topics["commands"] if m["type"] == kind and m["tenant_id"] == tenant
    )


# ---------------------------------------------------------------------------- trace delivery
def test_trace_delivery_prints_the_five_answers(
    activated: Activated, capsys: pytest.CaptureFixture[str]
) -> None:
    show = activated.showcase
    code, out, err = run_cli(
        capsys,
        [*activated.flags(), "trace", "delivery", show.delivery_id, "--tenant", show.tenant_id],
    )
    assert code == 0, err
    for heading in ("1. WHY", "2. WHAT", "3. TO WHOM, AT THAT MOMENT", "4. WHO DECIDED",
                    "5. WHAT REALLY HAPPENED"):  # fmt: skip
        assert heading in out
    campaign = command_of(activated, show.tenant_id, "campaign_define")
    event = command_of(activated, show.tenant_id, "event_define")
    task = command_of(activated, show.tenant_id, "agent_task_record")
    assert campaign["campaign_code"] in out
    assert event["event_name"] in out
    assert task["agent_name"] in out
    assert task["reasoning_summary"]
    assert task["reasoning_summary"] in out
    assert show.destination in out
    assert "the profile was a member of that snapshot: yes" in out
    assert "current status: clicked" in out
    # every fact in provider-time order: queued, the late `sent`, delivered, opened, clicked
    statuses = re.findall(r"^\s+\d+\s+\S+\s+(\w+)\s", out.split("5. WHAT REALLY HAPPENED")[1], re.M)
    assert statuses == ["queued", "sent", "delivered", "opened", "clicked"]
    assert "arrived late" in out


def test_trace_delivery_json_is_a_stable_document(
    activated: Activated, capsys: pytest.CaptureFixture[str]
) -> None:
    show = activated.showcase
    argv = [*activated.flags(), "trace", "delivery", show.delivery_id, "--tenant", show.tenant_id]
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert set(FIVE) <= set(doc)
    assert doc["schema"] == "leo-activation/trace-delivery/v1"
    assert doc["delivery_id"] == show.delivery_id
    campaign = command_of(activated, show.tenant_id, "campaign_define")
    task = command_of(activated, show.tenant_id, "agent_task_record")
    assert doc["why"]["campaign_id"] == str(
        ids.campaign_id(show.tenant_id, campaign["campaign_code"])
    )
    assert doc["who_decided"]["reasoning_summary"] == task["reasoning_summary"]
    assert doc["who_decided"]["task_id"] == str(ids.task_id(show.tenant_id, task["task_key"]))
    assert doc["to_whom"]["profile_in_snapshot"] is True
    assert doc["to_whom"]["snapshot"]["member_count"] >= 1
    happened = doc["what_happened"]
    assert happened["current_status"] == "clicked"
    history = happened["history"]
    assert [h["status"] for h in history] == ["queued", "sent", "delivered", "opened", "clicked"]
    assert [h["is_current"] for h in history] == [False, False, False, False, True]
    assert [h["arrived_late"] for h in history][1] is True  # the late `sent`
    times = [h["occurred_at"] for h in history]
    assert times == sorted(times)
    # the duplicate `delivered` receipt collapsed onto the first one
    assert happened["fact_count"] == len(history) == 5
    # stable: the same document twice (sorted keys, same content)
    assert run_cli(capsys, [*argv, "--json"])[1] == out


def test_unknown_delivery_is_exit_1_with_one_line(
    activated: Activated, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, tenant = uuid.uuid4(), activated.tenants[0]
    code, out, err = run_cli(
        capsys, [*activated.flags(), "trace", "delivery", str(missing), "--tenant", tenant]
    )
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"leo-activation: delivery {missing} not found for tenant {tenant}"
    ]


@pytest.mark.parametrize(
    ("object_id", "tenant"), [("not-a-uuid", None), (None, "1234"), ("42", "also-bad")]
)
def test_malformed_uuid_is_a_usage_error(
    activated: Activated, capsys: pytest.CaptureFixture[str], object_id: str | None,
    tenant: str | None,
) -> None:  # fmt: skip
    argv = [
        *activated.flags(), "trace", "delivery", object_id or activated.showcase.delivery_id,
        "--tenant", tenant or activated.tenants[0],
    ]  # fmt: skip
    code, _out, err = run_cli(capsys, argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "is not a uuid" in err


def test_another_tenant_cannot_trace_the_delivery(
    activated: Activated, capsys: pytest.CaptureFixture[str]
) -> None:
    show = activated.showcase
    other = next(t for t in activated.tenants if t != show.tenant_id)
    for what, object_id in (("delivery", show.delivery_id), ("profile", profile_of(activated))):
        code, out, err = run_cli(
            capsys, [*activated.flags(), "trace", what, object_id, "--tenant", other]
        )
        assert code == 1
        assert out == ""
        assert err.strip() == f"leo-activation: {what} {object_id} not found for tenant {other}"


# ---------------------------------------------------------------------------- trace profile
def profile_of(a: Activated) -> str:
    """The showcase delivery's profile (read from its trace as the tenant)."""
    assert a.settings.database_url is not None
    with connect(a.settings.database_url) as conn, tenant_transaction(conn, a.showcase.tenant_id):
        row = conn.execute(
            "SELECT profile_id FROM delivery_status_current WHERE delivery_id = %s",
            (uuid.UUID(a.showcase.delivery_id),),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_trace_profile_lists_every_activation(
    activated: Activated, capsys: pytest.CaptureFixture[str]
) -> None:
    show, profile = activated.showcase, profile_of(activated)
    argv = [*activated.flags(), "trace", "profile", profile, "--tenant", show.tenant_id]
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    assert f"Profile {profile}" in out
    assert show.delivery_id in out
    assert "snapshot" in out
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["profile"]["cdp_version"] == 2
    activities = {(a["activity"], a["delivery_id"]) for a in doc["activations"]}
    assert ("delivery", show.delivery_id) in activities
    snapshots = [a for a in doc["activations"] if a["activity"] == "snapshot"]
    assert snapshots
    assert {a["snapshot_id"] for a in snapshots} <= set(doc["profile"]["segment_snapshots"])
    delivered = next(a for a in doc["activations"] if a["delivery_id"] == show.delivery_id)
    assert delivered["delivery_status"] == "clicked"
    assert delivered["campaign_code"]
    assert delivered["agent_name"]


# ---------------------------------------------------------------------------- views and samples
def _declared_columns(path: Path) -> list[str]:
    """The names a sample's header declares: ``-- columns: a, b,`` plus indented continuations."""
    columns: list[str] = []
    collecting = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        text = line[2:].strip()
        if text.lower().startswith("columns:"):
            collecting, text = True, text.split(":", 1)[1]
        elif not (collecting and line.startswith("--   ")):
            collecting = False
            continue
        columns += [c.strip() for c in text.split(",") if c.strip()]
    return columns


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_query_runs_as_the_application_in_a_tenant(activated: Activated, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("-- "), "every sample starts with a comment saying what it answers"
    columns = _declared_columns(path)
    assert columns, f"{path.name} declares no '-- columns:' in its header"
    assert activated.settings.database_url is not None
    with connect(activated.settings.database_url) as conn:
        for tenant in activated.tenants:
            with tenant_transaction(conn, tenant):
                cursor = conn.execute(text.encode())
                assert cursor.description is not None
                assert [d.name for d in cursor.description] == columns
                rows = cursor.fetchall()
            if "may be empty" not in text.lower():
                assert rows, f"{path.name} returned no rows for tenant {tenant}"


def test_late_receipt_is_visible_to_the_operations_sample(activated: Activated) -> None:
    path = sql_dir() / "samples" / "late_and_out_of_order_receipts.sql"
    assert activated.settings.database_url is not None
    with (
        connect(activated.settings.database_url) as conn,
        tenant_transaction(conn, activated.showcase.tenant_id),
    ):
        rows = conn.execute(path.read_text(encoding="utf-8").encode()).fetchall()
    assert [(str(r[0]), r[1]) for r in rows] == [(activated.showcase.delivery_id, "sent")]


VIEWS = ("delivery_status_current", "delivery_history", "delivery_trace", "profile_activity")


@pytest.mark.parametrize("view", VIEWS)
def test_views_apply_row_level_security_to_the_caller(activated: Activated, view: str) -> None:
    assert activated.settings.database_url is not None
    with connect(activated.settings.database_url) as conn:
        with conn.transaction():
            assert conn.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
        seen = []
        for tenant in activated.tenants:
            with tenant_transaction(conn, tenant):
                rows = conn.execute(f"SELECT DISTINCT tenant_id FROM {view}").fetchall()
            assert [str(r[0]) for r in rows] == [tenant]
            seen.append(tenant)
        assert len(seen) == 2


# ---------------------------------------------------------------------------- status precedence
def test_current_status_follows_precedence_not_arrival(settings: Settings) -> None:
    """Facts inserted in a scrambled arrival order; the view picks by precedence, then time."""
    assert settings.database_url is not None
    tenant = make_tenant(settings.database_url, uuid.uuid4(), "precedence")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    cases: dict[str, list[tuple[str, int]]] = {
        "clicked": [("clicked", 300), ("queued", 0), ("sent", 10), ("opened", 200)],
        "delivered": [("delivered", 60), ("sent", 10), ("failed", 5)],  # delivered outranks
        "bounced": [("queued", 0), ("failed", 20), ("bounced", 30), ("sent", 10)],  # later wins
        "suppressed": [("queued", 0), ("suppressed", 10)],  # the later decision wins ...
        "queued": [("suppressed", 0), ("queued", 10)],  # ... both ways
        "sent": [("sent", 10), ("suppressed", 0)],  # a receipt shows what really happened
        "unsubscribed": [("opened", 50), ("unsubscribed", 40), ("clicked", 60)],
    }
    deliveries = {expected: uuid.uuid4() for expected in cases}
    with connect(settings.database_url) as conn, tenant_transaction(conn, tenant):
        for expected, facts in cases.items():
            for status, seconds in facts:
                conn.execute(
                    "INSERT INTO delivery_log (tenant_id, log_id, delivery_id, delivery_status, "
                    "sent_at) VALUES (%s, %s, %s, %s, %s)",
                    (tenant, uuid.uuid4(), deliveries[expected], status,
                     t0 + timedelta(seconds=seconds)),
                )  # fmt: skip
        rows = dict(
            conn.execute(
                "SELECT delivery_id, current_status FROM delivery_status_current"
            ).fetchall()
        )
        first = conn.execute(
            "SELECT first_queued_at, last_receipt_at, receipt_count FROM delivery_status_current "
            "WHERE delivery_id = %s",
            (deliveries["clicked"],),
        ).fetchone()
    assert {expected: rows[d] for expected, d in deliveries.items()} == {e: e for e in cases}
    assert first == (t0, t0 + timedelta(seconds=300), 3)


def test_trace_needs_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_cli(
        capsys,
        ["--database-url", "postgresql://nobody@127.0.0.1:1/none", "trace", "delivery",
         str(uuid.uuid4()), "--tenant", str(uuid.uuid4())],
    )  # fmt: skip
    assert code == 1
    assert len(err.strip().splitlines()) == 1
