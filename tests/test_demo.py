"""``leo-activation demo`` end to end on the test stack: it tells the whole story, prints a
delivery's five answers and a per-tenant summary, a second run changes nothing (same digest,
no new delivery), and neither touches the deployment it was pointed at: ``verify`` on the
deployment stays green after both."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from leo_activation.cli import main
from leo_activation.dev import corpus
from leo_activation.ops.digest import list_tenants
from leo_activation.settings import Settings
from tests.fix_db import DbUrls, drop_database
from tests.test_operating import apply_corpus, cli

HEADINGS = (
    "1. WHY (campaign)",
    "2. WHAT (marketing event)",
    "3. TO WHOM, AT THAT MOMENT (segment snapshot)",
    "4. WHO DECIDED (agent task)",
    "5. WHAT REALLY HAPPENED (delivery log)",
)
DIGEST = re.compile(r"^demo digest: ([0-9a-f]{64})$", re.M)
NEW = re.compile(r"new deliveries this run: (\d+)")


def _summary_rows(out: str) -> dict[str, list[str]]:
    """The per-tenant table: tenant label -> cells (header and rule lines skipped)."""
    table = out.split("new deliveries this run:")[1].split("demo digest:", maxsplit=1)[0]
    rows = {}
    for line in table.splitlines()[1:]:
        match = re.match(r"^(Tenant \d+ \([0-9a-f]{8}\))\s+(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2).split()
    return rows


@pytest.fixture
def demo_database(db: DbUrls) -> Iterator[str]:
    """A demo database name of this test's own (dropped after it); the default is leo_demo."""
    name = f"leo_demo_{uuid.uuid4().hex[:8]}"
    yield name
    drop_database(db.admin_url, name)


@pytest.mark.slow
def test_demo_tells_the_story_is_idempotent_and_leaves_the_deployment_alone(
    settings: Settings,
    demo_database: str,
    kafka_admin: AdminClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert settings.kafka_bootstrap is not None
    assert settings.database_url is not None
    assert settings.admin_database_url is not None
    # a deployment with traffic of its own, on the same servers as the demo
    apply_corpus(
        settings, corpus.build(66, n_tenants=1, n_profiles=6, n_receipts=6), settings.group_id
    )
    tenants_before = list_tenants(settings.admin_database_url)
    demo_prefix = settings.topic_prefix + "demo."
    # First run: configured by the environment, as README's command (1) does after `dev up`.
    monkeypatch.setenv("LEO_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("LEO_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("LEO_ADMIN_DATABASE_URL", settings.admin_database_url)
    monkeypatch.setenv("LEO_TOPIC_PREFIX", settings.topic_prefix)  # the demo must not write here
    code = main(
        ["demo", "--topic-prefix", demo_prefix, "--database", demo_database, "--idle", "1.5"]
    )
    first, err = capsys.readouterr()
    assert code == 0, err
    assert f"database {demo_database} (created; " in first

    steps = re.findall(r"^\[(\d+)/(\d+)\] ", first, re.M)
    assert steps
    assert [int(n) for n, _ in steps] == list(range(1, int(steps[0][1]) + 1))
    for heading in HEADINGS:
        assert heading in first
    trace = first.split(HEADINGS[0])[1].split("per tenant:")[0]
    assert "reasoning: " in trace
    assert "reasoning: -" not in trace
    assert "the profile was a member of that snapshot: yes" in trace
    assert "current status: clicked" in trace
    assert "arrived late" in trace
    assert "1 poison message" in first

    rows = _summary_rows(first)
    assert len(rows) == 2, first
    header = next(line for line in first.splitlines() if line.startswith("tenant  "))
    columns = header.split()
    assert columns[:4] == ["tenant", "profiles", "snapshots", "deliveries"]
    assert header.rstrip().endswith("dead letters")
    for cells in rows.values():
        profiles, snapshots, deliveries = (int(c) for c in cells[:3])
        assert profiles > 0
        assert snapshots >= 1
        assert deliveries > 0
        by_status = [int(c) for c in cells[3:-1]]
        assert sum(by_status) == deliveries
    # the poison receipt was keyed to the first tenant: one dead letter there, none elsewhere
    assert sorted(int(cells[-1]) for cells in rows.values()) == [0, 1]
    assert re.search(r"^  dead letter \S+ \[bad_uuid\] ", first, re.M)
    new_first = NEW.search(first)
    assert new_first is not None
    assert int(new_first.group(1)) > 0
    digest_first = DIGEST.search(first)
    assert digest_first is not None

    # Second run: configured by flags; nothing changes, the database is reused.
    for name in ("LEO_KAFKA_BOOTSTRAP", "LEO_DATABASE_URL", "LEO_ADMIN_DATABASE_URL"):
        monkeypatch.delenv(name)
    code = main(
        [
            "--bootstrap", settings.kafka_bootstrap, "--database-url", settings.database_url,
            "--admin-database-url", settings.admin_database_url,
            "--topic-prefix", settings.topic_prefix,
            "demo", "--topic-prefix", demo_prefix, "--database", demo_database, "--idle", "1.5",
        ]
    )  # fmt: skip
    second, err = capsys.readouterr()
    assert code == 0, err
    assert f"database {demo_database} (reused; 0 migrations applied)" in second
    new_second = NEW.search(second)
    digest_second = DIGEST.search(second)
    assert new_second is not None
    assert digest_second is not None
    assert new_second.group(1) == "0"
    assert digest_second.group(1) == digest_first.group(1)
    assert _summary_rows(second) == rows
    applied = [int(n) for n in re.findall(r"(\d+) applied", second)]
    assert applied  # every step reports its counts ...
    assert set(applied) == {0}  # ... and every republished message was a duplicate
    topics = kafka_admin.list_topics(timeout=10).topics
    assert [t for t in topics if t.startswith(demo_prefix)]

    # the deployment: no demo tenant in its database, and verify on it still passes
    assert list_tenants(settings.admin_database_url) == tenants_before
    monkeypatch.delenv("LEO_TOPIC_PREFIX")
    assert cli(settings, "verify", "--group", settings.group_id, "--idle", "2") == 0
    assert "state verified: " in capsys.readouterr().out


def test_demo_refuses_the_deployments_database_or_topic_prefix(
    settings: Settings, db: DbUrls, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in (["--database", db.name], ["--topic-prefix", settings.topic_prefix]):
        assert cli(settings, "demo", *extra) == 2
        err = capsys.readouterr().err
        assert "the deployment's" in err
        assert len(err.strip().splitlines()) == 1


def test_demo_without_a_database_is_a_one_line_error(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings.kafka_bootstrap is not None
    code = main(
        [
            "--bootstrap", settings.kafka_bootstrap,
            "--database-url", "postgresql://nobody@127.0.0.1:1/none",
            "--admin-database-url", "postgresql://nobody@127.0.0.1:1/none",
            "demo", "--topic-prefix", settings.topic_prefix + "demo.",
        ]
    )  # fmt: skip
    _out, err = capsys.readouterr()
    assert code == 1
    assert len(err.strip().splitlines()) == 1
