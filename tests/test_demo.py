"""``leo-activation demo`` end to end on the test stack: it tells the whole story, prints a
delivery's five answers and a per-tenant summary, and a second run changes nothing (same digest,
no new delivery)."""

from __future__ import annotations

import re

import pytest
from confluent_kafka.admin import AdminClient

from leo_activation.cli import main
from leo_activation.settings import Settings

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


@pytest.mark.slow
def test_demo_tells_the_story_and_is_idempotent(
    settings: Settings,
    kafka_admin: AdminClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert settings.kafka_bootstrap is not None
    assert settings.database_url is not None
    assert settings.admin_database_url is not None
    # First run: configured by the environment, as README's command (1) does after `dev up`.
    monkeypatch.setenv("LEO_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("LEO_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("LEO_ADMIN_DATABASE_URL", settings.admin_database_url)
    decoy = settings.topic_prefix.rstrip(".") + "-env."
    monkeypatch.setenv("LEO_TOPIC_PREFIX", decoy)  # the demo must not write into these
    code = main(["demo", "--topic-prefix", settings.topic_prefix, "--idle", "1.5"])
    first, err = capsys.readouterr()
    assert code == 0, err

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

    # Second run: configured by flags (the global --topic-prefix this time); nothing changes.
    for name in ("LEO_KAFKA_BOOTSTRAP", "LEO_DATABASE_URL", "LEO_ADMIN_DATABASE_URL"):
        monkeypatch.delenv(name)
    code = main(
        [
            "--bootstrap", settings.kafka_bootstrap, "--database-url", settings.database_url,
            "--admin-database-url", settings.admin_database_url,
            "--topic-prefix", settings.topic_prefix, "demo", "--idle", "1.5",
        ]
    )  # fmt: skip
    second, err = capsys.readouterr()
    assert code == 0, err
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
    assert not [t for t in topics if t.startswith(decoy)]


def test_demo_without_a_database_is_a_one_line_error(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert settings.kafka_bootstrap is not None
    code = main(
        [
            "--bootstrap", settings.kafka_bootstrap,
            "--database-url", "postgresql://nobody@127.0.0.1:1/none",
            "demo", "--topic-prefix", settings.topic_prefix,
        ]
    )  # fmt: skip
    _out, err = capsys.readouterr()
    assert code == 1
    assert len(err.strip().splitlines()) == 1
