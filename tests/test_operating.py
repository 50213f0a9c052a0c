"""Operating it: scaling with real consumer processes, SIGKILL and rebalance, metrics,
replay after a lost database, verify, and the dead-letter tools, on the real broker and database.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from leo_activation import kafka
from leo_activation.cli import main
from leo_activation.consumers import HANDLERS
from leo_activation.contracts import from_json
from leo_activation.db import connect
from leo_activation.dev import corpus
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.loop import Engine
from leo_activation.engine.metrics import EngineMetrics
from leo_activation.engine.stats import BatchStats, Counts
from leo_activation.kafka import ensure_topics
from leo_activation.logs import JsonFormatter
from leo_activation.ops import replay
from leo_activation.ops.digest import state_digest
from leo_activation.producers import TopicProducer
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_app import drain, read_topic, totals
from tests.fix_db import DbUrls, fresh_database, tenant_tx

REPO = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT_S = 240.0


# ---------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli(settings: Settings, *args: str) -> int:
    """Run the CLI in-process against this test's deployment."""
    assert settings.kafka_bootstrap
    assert settings.database_url
    assert settings.admin_database_url
    return main(
        [
            "--bootstrap", settings.kafka_bootstrap,
            "--database-url", settings.database_url,
            "--admin-database-url", settings.admin_database_url,
            "--topic-prefix", settings.topic_prefix,
            *args,
        ]
    )  # fmt: skip


def app_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEO_")}
    assert settings.kafka_bootstrap
    assert settings.database_url
    assert settings.admin_database_url
    env.update(
        LEO_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        LEO_DATABASE_URL=settings.database_url,
        LEO_ADMIN_DATABASE_URL=settings.admin_database_url,
        LEO_TOPIC_PREFIX=settings.topic_prefix,
        LEO_TOPIC_PARTITIONS=os.environ.get("LEO_TOPIC_PARTITIONS", "6"),
        LEO_TOPIC_REPLICATION_FACTOR=str(settings.topic_replication_factor),
        LEO_TOPIC_MIN_INSYNC_REPLICAS=str(settings.topic_min_insync_replicas),
    )
    return env


@contextmanager
def consumer_process(
    settings: Settings,
    group: str,
    log_path: Path,
    *extra: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``leo-activation consume`` process; killed on exit if still running."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "leo_activation", "consume", "--group", group, *extra],
            env=app_env(settings),
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def log_events(log_path: Path, event: str) -> list[dict[str, object]]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                found.append(entry)
    return found


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def scrape(port: int) -> dict[str, float]:
    """Every sample of the metrics endpoint, keyed ``name{label=value,...}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(name + "{"))


def scrape_or_empty(port: int) -> dict[str, float]:
    try:
        return scrape(port)
    except OSError:
        return {}


def publish_tenants_first(settings: Settings, c: corpus.Corpus, group: str) -> None:
    """Publish the commands and apply them in ``group``, then publish the other topics.

    The engine dead-letters a message whose tenant is not registered yet, and consumers read the
    topics concurrently, so a receipt fetched before its tenant's registration would be lost to
    the dead-letter topic; registering tenants first keeps the expected state exact."""
    publish(settings, "commands", [from_json("commands", m) for m in c.topics["commands"]])
    Engine(settings, HANDLERS, topics=["commands"], group=group).run(until_idle=1.0)
    for topic in ("profile-changes", "receipts"):
        publish(settings, topic, [from_json(topic, m) for m in c.topics.get(topic, [])])


def apply_corpus(settings: Settings, c: corpus.Corpus, group: str) -> BatchStats:
    publish_tenants_first(settings, c, group)
    return totals(drain(settings, group=group))


def settings_for(settings: Settings, urls: DbUrls) -> Settings:
    return settings.with_overrides(database_url=urls.app_url, admin_database_url=urls.admin_url)


# ---------------------------------------------------------------------- scaling and recovery
@pytest.mark.slow
@pytest.mark.faults
def test_two_consumer_processes_survive_sigkill_and_match_one_consumer(
    settings: Settings, stack: Endpoints, db_template: str, tmp_path: Path
) -> None:
    c = corpus.build(61, n_tenants=3, n_profiles=120, n_receipts=400)
    group = f"scale-{uuid.uuid4().hex[:8]}"
    publish_tenants_first(settings, c, group)
    port = free_port()
    common = ("--batch-size", "40", "--until-idle", "8")
    with (
        consumer_process(
            settings, group, tmp_path / "a.log", *common, "--metrics-port", str(port)
        ) as a,
        consumer_process(settings, group, tmp_path / "b.log", *common) as b,
    ):
        # kill b as soon as it has committed a batch: mid-run, with partitions of its own
        wait_for("a batch of b", lambda: bool(log_events(tmp_path / "b.log", "batch")))
        b.send_signal(signal.SIGKILL)
        assert b.wait(30) == -signal.SIGKILL
        # restart it at once: the group rebalances over a and b2 once the broker gives up on
        # the dead member (its session timeout)
        with consumer_process(settings, group, tmp_path / "b2.log", *common) as b2:
            samples: dict[str, float] = {}

            def scraped() -> bool:
                samples.update(scrape_or_empty(port))
                return total(samples, "leo_messages_consumed_total") > 0

            wait_for("metrics of a", scraped, timeout=PROCESS_TIMEOUT_S)  # answers mid-run
            assert samples["leo_accounting_mismatches_total{}"] == 0
            assert "leo_retries_total{kind=db}" in samples
            assert b2.wait(PROCESS_TIMEOUT_S) == 0, (tmp_path / "b2.log").read_text()[-2000:]
        assert a.wait(PROCESS_TIMEOUT_S) == 0, (tmp_path / "a.log").read_text()[-2000:]
    # both survivors took part after the rebalance
    assert log_events(tmp_path / "a.log", "batch")
    assert log_events(tmp_path / "b2.log", "batch")
    digest = state_digest(settings)[0]
    with fresh_database(stack, db_template) as other:
        single = settings_for(settings, other)
        # the same topics, one consumer, tenants first
        single_group = f"single-{uuid.uuid4().hex[:8]}"
        Engine(single, HANDLERS, topics=["commands"], group=single_group).run(until_idle=1.0)
        stats = totals(drain(single, group=single_group))
        keys = len(read_topic(settings, "profile-keys"))  # one a profile, made by publish
        assert stats.consumed == c.count() - len(c.topics["commands"]) + keys
        assert stats.dead_lettered == 0
        assert state_digest(single)[0] == digest


@pytest.mark.slow
def test_replay_rebuilds_a_lost_database_and_metrics_count_every_message(
    settings: Settings, stack: Endpoints, db: DbUrls, tmp_path: Path
) -> None:
    c = corpus.build(62, n_tenants=2, n_profiles=40, n_receipts=120)
    group = f"live-{uuid.uuid4().hex[:8]}"
    apply_corpus(settings, c, group)
    before = state_digest(settings)[0]

    # the database is lost: an empty one in its place, migrated, then the group rewound
    with connect(stack.admin_database_url, autocommit=True) as conn:
        name = sql.Identifier(db.name)
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    assert cli(settings, "migrate") == 0
    # the commands topic first, as the README's recovery steps do, then everything else
    rc = cli(settings, "replay", "--group", group, "--topic", "commands", "--from-offset", "0")
    assert rc == 0
    Engine(settings, HANDLERS, topics=["commands"], group=group).run(until_idle=1.0)
    for topic in ("profile-changes", "receipts", "profile-keys"):
        rc = cli(settings, "replay", "--group", group, "--topic", topic, "--from-offset", "0")
        assert rc == 0
    keys = len(read_topic(settings, "profile-keys"))  # one a profile, made by publish
    expected = c.count() - len(c.topics["commands"]) + keys

    port = free_port()
    with consumer_process(settings, group, tmp_path / "c.log", "--metrics-port", str(port)) as proc:
        samples: dict[str, float] = {}

        def all_consumed() -> bool:
            samples.clear()
            samples.update(scrape_or_empty(port))
            return total(samples, "leo_messages_consumed_total") >= expected

        wait_for("every message consumed", all_consumed, timeout=PROCESS_TIMEOUT_S)

        def caught_up() -> bool:  # per-partition lag, refreshed while idle too
            lag = {
                k: v for k, v in scrape_or_empty(port).items() if k.startswith("leo_consumer_lag{")
            }
            # a caught-up partition may still count its last transaction's commit marker
            return len(lag) >= 6 and max(lag.values()) <= 1

        wait_for("lag back to 0", caught_up, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    for topic in ("profile-changes", "receipts"):
        assert samples[f"leo_messages_consumed_total{{topic={topic}}}"] == len(c.topics[topic])
    assert samples["leo_messages_consumed_total{topic=profile-keys}"] == keys
    assert samples["leo_messages_consumed_total{topic=commands}"] == 0
    assert total(samples, "leo_messages_consumed_total") == expected
    assert total(samples, "leo_messages_dead_lettered_total") == 0
    assert (
        total(samples, "leo_messages_applied_total")
        + total(samples, "leo_messages_duplicate_total")
        == expected
    )
    assert samples["leo_accounting_mismatches_total{}"] == 0
    assert samples["leo_batches_total{}"] >= 1
    assert state_digest(settings)[0] == before
    # structured logs: one JSON object per line with level, logger and message
    batches = log_events(tmp_path / "c.log", "batch")
    assert batches
    assert {"level", "logger", "message", "time"} <= set(batches[0])
    assert sum(int(str(b["consumed"])) for b in batches) == expected


# ---------------------------------------------------------------------- replay
def test_replay_dry_run_changes_nothing_and_refuses_an_active_group(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = corpus.build(63, n_tenants=2, n_profiles=10, n_receipts=30)
    group = f"live-{uuid.uuid4().hex[:8]}"
    apply_corpus(settings, c, group)
    admin = kafka.admin_client(settings)
    physical = settings.topic("receipts")
    partitions = kafka.topic_partitions(admin, physical)
    committed = kafka.committed_offsets(admin, group, physical, partitions)
    assert sum(v or 0 for v in committed.values()) >= len(c.topics["receipts"])
    capsys.readouterr()

    assert cli(settings, "replay", "--group", group, "--topic", "receipts",
               "--from-offset", "0", "--dry-run") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "dry run: nothing changed" in out
    assert "->" in out
    assert kafka.committed_offsets(admin, group, physical, partitions) == committed

    # times: before everything -> the start; after everything -> the end (clamped)
    plans = replay.plan(settings, group, physical, from_ms=0, to_ms=2**62)
    assert all(pp.new == pp.low for pp in plans)
    assert sum(pp.before_to_time or 0 for pp in plans) == sum(pp.to_reprocess for pp in plans)
    future = replay.parse_time("2999-01-01T00:00:00Z", "--from-time")
    assert all(pp.new == pp.high for pp in replay.plan(settings, group, physical, from_ms=future))
    assert all(
        pp.new == pp.high for pp in replay.plan(settings, group, physical, from_offset=10**12)
    )
    assert cli(settings, "replay", "--group", group, "--topic", "receipts",
               "--from-time", "2020-01-01T00:00:00", "--dry-run") == 0  # fmt: skip

    # usage errors: exit 2
    assert cli(settings, "replay", "--group", group, "--topic", "receipts",
               "--from-time", "yesterday") == 2  # fmt: skip
    assert cli(settings, "replay", "--group", group, "--topic", "nope", "--from-offset", "0") == 2
    capsys.readouterr()
    assert cli(settings, "replay", "--group", group, "--topic", "receipts",
               "--from-time", "2024-02-01T00:00:00Z", "--to-time", "2024-01-01T00:00:00Z",
               "--dry-run") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--to-time" in err
    assert len(err.strip().splitlines()) == 1
    assert kafka.committed_offsets(admin, group, physical, partitions) == committed

    # a group name that never consumed (a typo) is warned about, in one line
    typo = group + "x"
    assert cli(settings, "replay", "--group", typo, "--topic", "receipts",
               "--from-offset", "0", "--dry-run") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"group {typo} has no committed offsets" in err
    assert len(err.strip().splitlines()) == 1
    assert cli(settings, "replay", "--group", group, "--topic", "receipts",
               "--from-offset", "0", "--dry-run") == 0  # fmt: skip
    assert "no committed offsets" not in capsys.readouterr().err

    # a running consumer in the group: refused, nothing changed
    with consumer_process(settings, group, tmp_path / "live.log") as proc:
        wait_for("the consumer to join", lambda: bool(replay.active_members(admin, group)))
        capsys.readouterr()
        assert cli(settings, "replay", "--group", group, "--topic", "receipts",
                   "--from-offset", "0") == 1  # fmt: skip
        err = capsys.readouterr().err
        assert "active member" in err
        assert len(err.strip().splitlines()) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert kafka.committed_offsets(admin, group, physical, partitions) == committed

    # stopped: the rewind goes through
    assert (
        cli(settings, "replay", "--group", group, "--topic", "receipts", "--from-offset", "0") == 0
    )
    assert "rewound" in capsys.readouterr().out
    rewound = kafka.committed_offsets(admin, group, physical, partitions)
    assert all(v == 0 for v in rewound.values())
    again = totals(drain(settings, group=group))
    assert again.consumed == len(c.topics["receipts"])
    assert again.applied == 0


# ---------------------------------------------------------------------- verify
@pytest.mark.backends  # on Citus too: the rebuild is a database of the coordinator's own
def test_verify_passes_on_an_intact_system_and_names_the_first_difference(
    settings: Settings, stack: Endpoints, db: DbUrls, capsys: pytest.CaptureFixture[str]
) -> None:
    c = corpus.build(64, n_tenants=2, n_profiles=12, n_receipts=30)
    apply_corpus(settings, c, settings.group_id)
    digest = state_digest(settings)[0]
    capsys.readouterr()
    assert cli(settings, "verify", "--group", settings.group_id, "--idle", "3") == 0
    assert f"state verified: {digest}" in capsys.readouterr().out

    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "UPDATE cdp_profiles SET email = 'tampered@example.com' WHERE (tenant_id, profile_id) ="
            " (SELECT tenant_id, profile_id FROM cdp_profiles ORDER BY 1, 2 OFFSET 3 LIMIT 1)"
            " RETURNING tenant_id, profile_id"
        ).fetchone()
    assert row is not None
    tenant, profile = row
    assert cli(settings, "verify", "--group", settings.group_id, "--idle", "3") == 1
    captured = capsys.readouterr()
    assert f"tenant {tenant}, table cdp_profiles" in captured.out
    assert str(profile) in captured.out
    assert "differs" in captured.out
    assert "tampered@example.com" in captured.out
    assert "state differs" in captured.err
    # verify's own progress is logged (INFO records); the verdict is the one other line
    verdict = [x for x in captured.err.splitlines() if x.strip() and '"level":"INFO"' not in x]
    assert len(verdict) == 1, captured.err

    # nothing left behind: scratch databases, topics and groups
    with connect(stack.admin_database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'leo_verify_%'"
        ).fetchone()
    assert left == (0,)
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(settings.topic_prefix + "verify-")]


def test_verify_names_a_row_missing_from_the_live_database(
    settings: Settings, db: DbUrls, capsys: pytest.CaptureFixture[str]
) -> None:
    c = corpus.build(65, n_tenants=1, n_profiles=12, n_receipts=10)
    apply_corpus(settings, c, settings.group_id)
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "DELETE FROM cdp_profiles WHERE (tenant_id, profile_id) ="
            " (SELECT tenant_id, profile_id FROM cdp_profiles ORDER BY 1, 2 OFFSET 4 LIMIT 1)"
            " RETURNING tenant_id, profile_id"
        ).fetchone()
    assert row is not None
    capsys.readouterr()
    assert cli(settings, "verify", "--group", settings.group_id, "--idle", "3") == 1
    out = capsys.readouterr().out
    assert f"tenant {row[0]}, table cdp_profiles" in out
    assert str(row[1]) in out
    assert "missing from the live database" in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_verify_stopped_by_a_signal_removes_its_database_topics_and_group(
    settings: Settings, stack: Endpoints, signum: signal.Signals
) -> None:
    apply_corpus(settings, corpus.build(67, n_tenants=1, n_profiles=6, n_receipts=6), "live")
    admin = kafka.admin_client(settings)
    scratch_prefix = settings.topic_prefix + "verify-"

    def scratch_topics() -> list[str]:
        return [t for t in admin.list_topics(timeout=10).topics if t.startswith(scratch_prefix)]

    def databases(name: str) -> int:
        with connect(stack.admin_database_url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
            return int(row.fetchone()[0])  # type: ignore[index]

    proc = subprocess.Popen(
        # a long --idle keeps it rebuilding while the signal arrives
        [sys.executable, "-m", "leo_activation", "verify", "--group", "live", "--idle", "120"],
        env=app_env(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for("the rebuild to write its scratch topics", lambda: bool(scratch_topics()))
        suffix = scratch_topics()[0].removeprefix(scratch_prefix).split(".")[0]
        scratch, group = f"leo_verify_{suffix}", f"leo-verify-{suffix}"
        assert databases(scratch) == 1
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signum  # it ends by that signal, after cleaning up
    text = err.decode()
    assert "Traceback" not in text
    *logged, last = text.strip().splitlines()
    assert last == (
        f"leo-activation: verify stopped by {signum.name}; its scratch database, topics and "
        "group were removed"
    )
    # before it, at most verify's own progress lines (JSON in a pipe), no warning
    assert all(json.loads(line)["level"] == "INFO" for line in logged), text
    assert databases(scratch) == 0
    assert scratch_topics() == []
    groups = admin.list_consumer_groups(request_timeout=10).result().valid
    assert group not in {g.group_id for g in groups}


def test_verify_logs_its_progress_and_sums_up_dead_letters(
    settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_corpus(settings, corpus.build(68, n_tenants=1, n_profiles=6, n_receipts=6), "live")
    producer = TopicProducer(settings)
    for n in range(7):  # poison: not Avro at all
        producer.produce_raw(settings.topic("receipts"), b"k%d" % n, b"not avro %d" % n)
    producer.flush()
    drain(settings, group="live")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli(settings, "verify", "--group", "live", "--idle", "2") == 0
    assert "state verified" in capsys.readouterr().out
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "dead_letter" not in events  # not one line per dead letter ...
    [summary] = [r for r in caplog.records if getattr(r, "event", None) == "verify_dead_letters"]
    assert getattr(summary, "by_class", None) == {"bad_magic": 7}  # ... but one summary
    message = summary.getMessage()
    assert "dead-lettered 7 messages (7 bad_magic)" in message
    assert message.count("bad_magic:") == 3  # a few examples, not all
    progress_lines = [r for r in caplog.records if getattr(r, "event", None) == "verify_progress"]
    assert progress_lines
    last = progress_lines[-1]
    assert getattr(last, "reread", 0) >= 6 + 6 + 7
    assert getattr(last, "lag", None) == 0


# ---------------------------------------------------------------------- progress
def _jsonl(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "commands.jsonl"
    tenants = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"progress-{i}")) for i in range(n)]
    path.write_text(
        "".join(
            json.dumps(
                {
                    "type": "tenant_register",
                    "tenant_id": t,
                    "tenant_name": f"T{i}",
                    "occurred_at": "2026-01-01T00:00:00Z",
                }
            )
            + "\n"
            for i, t in enumerate(tenants)
        )
    )
    return path


def under_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """(exit code, stdout, what was drawn on stderr) of the CLI with stderr on a pty."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "leo_activation", *args],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    drawn = bytearray()
    while True:  # read as it is drawn, so the terminal's buffer never blocks the writer
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    out, _ = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    return proc.returncode, out.decode(), drawn.decode(errors="replace")


def test_publish_progress_is_silent_in_a_pipe_and_drawn_on_a_terminal(
    settings: Settings, tmp_path: Path
) -> None:
    path = _jsonl(tmp_path, 3000)
    env = {k: v for k, v in app_env(settings).items() if k != "LEO_PROGRESS"}
    piped = subprocess.run(
        [sys.executable, "-m", "leo_activation", "publish", "--topic", "commands", str(path)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    for drawing in ("validating", "publishing", "\x1b["):  # no bar, no terminal control
        assert drawing not in piped.stderr
    assert "published 3000 messages" in piped.stdout

    code, out, screen = under_a_terminal(["publish", "--topic", "commands", str(path)], env)
    assert code == 0
    assert "published 3000 messages" in out
    assert "validating" in screen
    assert "publishing" in screen
    assert "/3000" in screen.replace(",", "")
    assert "lines" in screen


def test_consume_until_idle_draws_the_backlog_it_drains_on_a_terminal(settings: Settings) -> None:
    publish_tenants_first(
        settings, corpus.build(69, n_tenants=1, n_profiles=30, n_receipts=60), "x"
    )
    env = {k: v for k, v in app_env(settings).items() if k != "LEO_PROGRESS"}
    code, _out, screen = under_a_terminal(["consume", "--until-idle", "2"], env)
    assert code == 0
    assert "consume: draining" in screen
    assert "messages" in screen


# ---------------------------------------------------------------------- dead letters
def test_dead_letters_list_shows_the_reason_and_redrive_puts_it_back(
    settings: Settings,
    stack: Endpoints,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = str(uuid.uuid4())
    delivery = str(uuid.uuid4())
    receipt = {
        "type": "delivery_receipt", "tenant_id": tenant, "delivery_id": delivery,
        "provider": "sendgrid", "provider_message_id": "pm-1", "status": "delivered",
        "occurred_at": "2026-01-01T00:00:00Z", "destination": "a@example.com",
        "channel": "email", "provider_response": {"code": 250},
    }  # fmt: skip
    ensure_topics(settings)
    producer = TopicProducer(settings)
    kind, record = from_json("receipts", receipt)
    producer.send("receipts", kind, record, headers=[("leo.correlation_id", b"corr-42")])
    producer.flush()
    with caplog.at_level(logging.WARNING, logger="leo_activation.engine.loop"):
        stats = totals(drain(settings))
    assert stats.dead_lettered == 1
    logged = [r for r in caplog.records if getattr(r, "event", None) == "dead_letter"]
    assert [getattr(r, "correlation_id", None) for r in logged] == ["corr-42"]

    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    dlq = settings.topic("dead-letters")
    assert len(admin.list_topics(topic=dlq, timeout=10).topics[dlq].partitions) == 1

    capsys.readouterr()
    assert cli(settings, "dead-letters", "list") == 0
    out = capsys.readouterr().out
    assert "unknown_tenant" in out
    assert settings.topic("receipts") in out
    assert tenant in out
    assert cli(settings, "dead-letters", "list", "--json") == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["error_class"] == "unknown_tenant"
    assert "not registered" in entry["reason"]
    assert entry["tenant_id"] == tenant
    assert entry["original_topic"] == settings.topic("receipts")

    # usage and missing ids
    assert cli(settings, "dead-letters", "redrive", "x") == 2
    assert cli(settings, "dead-letters", "redrive", "9999") == 1

    # fix the cause (register the tenant), then re-drive
    publish(settings, "commands", [from_json("commands", {
        "type": "tenant_register", "tenant_id": tenant, "tenant_name": "Late",
        "occurred_at": "2026-01-01T00:00:00Z",
    })])  # fmt: skip
    drain(settings)
    assert cli(settings, "dead-letters", "redrive", entry["id"]) == 0
    assert f"re-drove dead letter {entry['id']}" in capsys.readouterr().out
    receipts = read_topic(settings, "receipts")
    redriven = [
        m for m in receipts if ("leo.redriven-from", entry["id"].encode()) in (m.headers() or [])
    ]
    assert len(redriven) == 1
    original = [m for m in receipts if m is not redriven[0]]
    assert redriven[0].value() == original[0].value()
    assert redriven[0].key() == original[0].key()
    # the original headers come back too: the correlation id is not lost on the way round
    assert ("leo.correlation_id", b"corr-42") in (redriven[0].headers() or [])
    again = totals(drain(settings))
    assert again.applied == 1
    assert again.dead_lettered == 0
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, tenant):
        found = conn.execute(
            "SELECT count(*) FROM delivery_log WHERE delivery_id = %s", (delivery,)
        ).fetchone()
    assert found == (1,)


# ---------------------------------------------------------------------- in-process pieces
def test_metrics_export_the_accounting_invariant() -> None:
    metrics = EngineMetrics(["receipts"])
    good = BatchStats(consumed=3, applied=2, duplicates=1)
    good.topics["receipts"] = Counts(consumed=3, applied=2, duplicates=1)
    metrics.observe_batch(good)
    lost = BatchStats(consumed=2, applied=1)
    lost.topics["receipts"] = Counts(consumed=2, applied=1)
    metrics.observe_batch(lost)
    value = metrics.registry.get_sample_value
    assert value("leo_messages_consumed_total", {"topic": "receipts"}) == 5
    assert value("leo_messages_applied_total", {"topic": "receipts"}) == 3
    assert value("leo_accounting_mismatches_total") == 1
    assert value("leo_batches_total") == 2
    assert value("leo_batch_messages_count") == 2


def test_json_log_lines_carry_level_logger_message_and_extras() -> None:
    record = logging.LogRecord("leo_activation.engine.loop", logging.WARNING, __file__, 1,
                               "dead-lettered %s", ("x",), None)  # fmt: skip
    record.correlation_id = "corr-1"
    record.event = "dead_letter"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "leo_activation.engine.loop"
    assert entry["message"] == "dead-lettered x"
    assert entry["correlation_id"] == "corr-1"
    assert entry["event"] == "dead_letter"
