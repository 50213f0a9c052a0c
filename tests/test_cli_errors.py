"""Mistakes an operator makes, driven through the CLI as a subprocess: each is one line on stderr
with the documented exit code, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import conninfo, sql

from leo_activation import __version__
from leo_activation.cli import build_parser
from leo_activation.db import connect, with_database
from leo_activation.dev import corpus
from leo_activation.kafka import ensure_topics
from leo_activation.migrate import MIGRATE_LOCK_KEY
from leo_activation.settings import Settings
from tests.fix_db import DbUrls
from tests.fix_faults import consumer_env
from tests.test_operating import app_env


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit code, stderr) of ``leo-activation ARGS`` in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stderr


def assert_one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("topic", ["dead-letters", "delivery-requests"])
def test_consume_refuses_an_output_topic(topic: str) -> None:
    code, stderr = run_cli("consume", "--topics", "receipts", topic)
    assert code == 2
    line = assert_one_line(stderr)
    assert topic in line
    assert "commands, profile-changes, receipts" in line


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# a stack nobody runs: what a command must not reach before it has checked its settings
NOWHERE = {
    "LEO_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
    "LEO_DATABASE_URL": f"postgresql://app:{'pw-' + 'x' * 8}@127.0.0.1:{closed_port()}/leo",
}


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["consume", "--batch-size", "-5"], {}, "--batch-size=-5: expected an integer from 1 to"),
        (["consume", "--batch-size", "2000000"], {}, "--batch-size=2000000: expected an integer"),
        (["consume"], {"LEO_BATCH_SIZE": "0"}, "LEO_BATCH_SIZE='0': expected an integer from 1"),
        (
            ["digest"],
            {"LEO_BATCH_TIMEOUT_S": "abc"},
            "LEO_BATCH_TIMEOUT_S='abc': expected a number",
        ),
        (["consume", "--metrics-port", "70000"], {}, "--metrics-port=70000: expected a TCP port"),
        (["dev", "status"], {"LEO_LOG_FORMAT": "xml"}, "LEO_LOG_FORMAT='xml': expected auto, text"),
        # a global flag after the sub-command is the global flag (here, checked and refused)
        (["consume", "--log-format", "xml"], {}, "--log-format='xml': expected auto, text or json"),
        (["digest", "--tables", "--topic-prefix", "a b"], {}, "--topic-prefix='a b': expected"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_exit_2(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    code, stderr = run_cli(*argv, env={**NOWHERE, **env})
    assert code == 2
    line = assert_one_line(stderr)
    assert line.startswith("leo-activation: ")
    assert expected in line


def test_global_flags_are_accepted_after_the_sub_command() -> None:
    before = run_cli("--bootstrap", "127.0.0.1:1", "--log-level", "debug", "dev", "status")
    after = run_cli("dev", "status", "--bootstrap", "127.0.0.1:1", "--log-level", "debug")
    assert before[0] == after[0] == 0


def test_a_usage_error_says_it_once_with_the_commands_usage() -> None:
    code, stderr = run_cli("consume", "--batch-szie", "5")
    assert code == 2
    line = assert_one_line(stderr)
    assert line.count("leo-activation") == 2  # the prefix, then the usage; not doubled
    assert line.startswith("leo-activation: consume: unrecognized arguments: --batch-szie 5; ")
    assert "usage: leo-activation consume [--topics TOPICS" in line


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", "--version"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.strip() == f"leo-activation {__version__}"


def test_metrics_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stderr = run_cli("consume", "--metrics-port", str(port), env=NOWHERE)
    assert code == 1
    line = assert_one_line(stderr)
    assert f"metrics port {port} [--metrics-port, LEO_METRICS_PORT]: Address already in use" in line


def test_a_broker_on_a_closed_port_is_a_few_lines_not_hundreds(settings: Settings) -> None:
    # a few seconds of the start-up wait: a line per attempt, librdkafka's own rate-limited;
    # the database answers (consume reaches it first, and waits for one that does not)
    assert settings.database_url is not None
    env = {**NOWHERE, "LEO_KAFKA_STARTUP_TIMEOUT_S": "4", "LEO_DATABASE_URL": settings.database_url}
    code, stderr = run_cli("consume", env=env)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert not [line for line in lines if line.startswith("%")]  # librdkafka's own stderr lines
    assert len(lines) <= 8, stderr
    # in a pipe the logs are JSON: the start line says where, with no secret
    start = json.loads(lines[0])
    assert start["event"] == "start"
    assert start["brokers"] == NOWHERE["LEO_KAFKA_BOOTSTRAP"]
    assert start["database"].startswith("127.0.0.1:")
    assert "pw-" not in stderr
    assert settings.database_url.split("@")[0] not in stderr  # the DSN's user:password part
    assert lines[-1].startswith(f"leo-activation: Kafka at {NOWHERE['LEO_KAFKA_BOOTSTRAP']} ")

    _, text = run_cli("--log-format", "text", "consume", env=env)
    first = text.splitlines()[0]
    assert re.match(r"\d\d:\d\d:\d\d INFO +leo-activation \S+ consuming ", first), first


SECRET = "s3cret-" + "q" * 8


@pytest.mark.parametrize(
    "argv",
    [["dev", "status"], ["--help"], ["consume", "--help"], ["dev", "status", "--help"]],
)
def test_no_password_is_ever_printed(argv: list[str]) -> None:
    env = {
        "LEO_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        "LEO_DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:{closed_port()}/leo",
        "LEO_ADMIN_DATABASE_URL": f"host=127.0.0.1 port={closed_port()} password={SECRET}",
        "LEO_KAFKA_SASL_PASSWORD": SECRET,
        "LEO_KAFKA__SASL_OAUTHBEARER_CONFIG": f"secret={SECRET}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", *argv],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    if argv == ["dev", "status"]:
        assert "postgresql://app:***@127.0.0.1:" in done.stdout


@pytest.mark.parametrize("topic", ["dead-letters", "delivery-requests", "profile-keys"])
def test_publish_refuses_a_topic_the_product_writes(topic: str, tmp_path: Path) -> None:
    """The keys topic too: data keys are made by publish's key ring, never read from a file."""
    path = tmp_path / "any.jsonl"
    path.write_text("{}\n")
    code, stderr = run_cli("publish", "--topic", topic, str(path), env=NOWHERE)
    assert code == 2
    assert "is written by this product" in assert_one_line(stderr)


def test_publish_of_a_wrong_field_type_is_one_line_not_a_schema_dump(tmp_path: Path) -> None:
    receipt = corpus.build(5, n_tenants=1, n_profiles=1, n_receipts=1, duplicate_rate=0).topics[
        "receipts"
    ][0]
    path = tmp_path / "receipts.jsonl"
    path.write_text(json.dumps({**receipt, "status": 12345}) + "\n")
    code, stderr = run_cli("publish", "--topic", "receipts", str(path), env=NOWHERE)
    assert code == 1
    line = assert_one_line(stderr)
    assert line.startswith(f"leo-activation: {path}:1: ")
    assert "status is 12345 (int)" in line
    assert "nothing was published" in line


def _leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [path]
    return [leaf for name, child in subs[0].choices.items()
            for leaf in _leaf_commands(child, (*path, name))]  # fmt: skip


# what each sub-command requires, to be parsed at all
REQUIRED = {
    ("publish",): ["--topic", "commands", "f.jsonl"],
    ("trace", "delivery"): ["x", "--tenant", "t"],
    ("trace", "profile"): ["x", "--tenant", "t"],
    ("replay",): ["--group", "g", "--topic", "commands", "--from-offset", "0"],
    ("dead-letters", "redrive"): ["1"],
}
FLAGS = ["--bootstrap", "b:1", "--log-level", "DEBUG", "--log-format", "text"]


@pytest.mark.parametrize("command", _leaf_commands(build_parser()), ids=" ".join)
def test_every_sub_command_takes_the_global_flags_before_or_after_it(
    command: tuple[str, ...],
) -> None:
    argv = [*command, *REQUIRED.get(command, [])]
    for args in (
        build_parser().parse_args([*FLAGS, *argv]),
        build_parser().parse_args([*argv, *FLAGS]),
        build_parser().parse_args(["--bootstrap", "before:1", *argv, *FLAGS]),  # after wins
    ):
        assert (args.kafka_bootstrap, args.log_level, args.log_format) == ("b:1", "DEBUG", "text")
    untouched = build_parser().parse_args(["--log-level", "ERROR", *argv])
    assert (untouched.log_level, untouched.kafka_bootstrap) == ("ERROR", None)


# ---------------------------------------------------------------------- operating rows
CLOSED = "127.0.0.1:1"  # nothing listens on port 1
DSN_PASSWORD = "s3cr3t-pw"
CLOSED_DSN = f"postgresql://leo_app:{DSN_PASSWORD}@{CLOSED}/leo"


def run_in(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leo_activation", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_digest_with_the_database_on_a_closed_port_is_one_line() -> None:
    code, stderr = run_cli(
        "digest", env={"LEO_DATABASE_URL": CLOSED_DSN, "LEO_ADMIN_DATABASE_URL": CLOSED_DSN}
    )
    assert code == 1
    line = assert_one_line(stderr)
    assert "digest: database: connection failed" in line
    assert DSN_PASSWORD not in stderr


def test_verify_with_the_database_on_a_closed_port_is_one_line(settings: Settings) -> None:
    ensure_topics(settings)  # the broker answers, the database does not
    done = run_in(
        {**app_env(settings), "LEO_DATABASE_URL": CLOSED_DSN, "LEO_ADMIN_DATABASE_URL": CLOSED_DSN},
        "verify", "--idle", "1",
    )  # fmt: skip
    assert done.returncode == 1
    line = assert_one_line(done.stderr)
    assert "verify: database: connection failed" in line
    assert DSN_PASSWORD not in done.stderr


def test_replay_of_a_group_that_never_committed_warns_in_one_line(settings: Settings) -> None:
    ensure_topics(settings)
    done = run_in(app_env(settings), "replay", "--group", "leo-activaton", "--topic", "receipts",
                  "--from-offset", "0", "--dry-run")  # fmt: skip
    assert done.returncode == 0
    line = assert_one_line(done.stderr)
    assert "warning: group leo-activaton has no committed offsets" in line
    assert "dry run: nothing changed" in done.stdout


def test_replay_refuses_to_time_before_from_time() -> None:
    code, stderr = run_cli(
        "replay", "--group", "g", "--topic", "receipts", "--from-time", "2026-02-01T00:00:00Z",
        "--to-time", "2026-01-01T00:00:00Z", env={"LEO_KAFKA_BOOTSTRAP": CLOSED},
    )  # fmt: skip
    assert code == 2
    line = assert_one_line(stderr)
    assert "--to-time 2026-01-01T00:00:00Z is before --from-time" in line


@pytest.mark.parametrize("seconds", ["-1", "0"])
def test_consume_refuses_an_until_idle_that_is_not_positive(seconds: str) -> None:
    code, stderr = run_cli("consume", "--until-idle", seconds, env={"LEO_KAFKA_BOOTSTRAP": CLOSED})
    assert code == 2
    line = assert_one_line(stderr)
    assert "--until-idle" in line


def test_a_second_migrate_says_it_waits_for_the_lock_then_gives_up(db: DbUrls) -> None:
    with connect(db.admin_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        code, stderr = run_cli(
            "migrate", "--lock-timeout", "1.5",
            env={"LEO_DATABASE_URL": db.app_url, "LEO_ADMIN_DATABASE_URL": db.admin_url},
        )  # fmt: skip
    assert code == 1
    assert "Traceback" not in stderr
    waiting, gave_up = stderr.strip().splitlines()
    assert "holds the migration lock" in waiting
    assert "waiting up to 2s" in waiting
    assert gave_up.startswith("leo-activation: another migrate run still holds the migration lock")
    assert "after 2s" in gave_up


def test_dead_letters_list_with_the_broker_down_is_one_line() -> None:
    code, stderr = run_cli("dead-letters", "list", env={"LEO_KAFKA_BOOTSTRAP": CLOSED})
    assert code == 1
    # besides librdkafka's own log, rate-limited to a line every few seconds, one line
    line = assert_one_line(
        "\n".join(x for x in stderr.splitlines() if '"logger":"leo_activation.librdkafka"' not in x)
    )
    assert line.startswith("leo-activation: dead-letters list: Kafka: ")
    assert len(stderr.splitlines()) <= 4, stderr


def test_dev_up_with_external_servers_checks_they_answer_and_prints_no_password(
    tmp_path: Path,
) -> None:
    env = {
        "LEO_DEV_HOME": str(tmp_path / "stack"),
        "LEO_KAFKA_BOOTSTRAP": CLOSED,
        "LEO_DATABASE_URL": CLOSED_DSN,
        "LEO_ADMIN_DATABASE_URL": CLOSED_DSN.replace("leo_app", "owner"),
    }
    up = run_in({**os.environ, **env}, "dev", "up")
    assert up.returncode == 1  # nothing reachable: not "ready"
    assert "ready" not in up.stdout
    line = assert_one_line(up.stderr)
    assert "LEO_KAFKA_BOOTSTRAP and LEO_DATABASE_URL are set, so dev up starts nothing" in line
    assert DSN_PASSWORD not in up.stdout + up.stderr
    assert not (tmp_path / "stack").exists()  # and it started nothing


def test_publish_of_a_directory_is_one_line(tmp_path: Path) -> None:
    code, stderr = run_cli("publish", "--topic", "receipts", str(tmp_path), env=NOWHERE)
    assert code == 2
    assert "is a directory" in assert_one_line(stderr)


def test_publish_of_dev_null_publishes_nothing_and_asks_no_broker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", "publish", "--topic", "receipts", "/dev/null"],
        env={**os.environ, **NOWHERE}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no messages, nothing published" in done.stdout
    assert done.stderr == ""


def test_publish_reads_a_pipe_like_a_file(tmp_path: Path) -> None:
    """``publish <(…)`` names a FIFO: it is read (its bad line reported), not "no such file"."""
    fifo = tmp_path / "lines"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("w") as writer:
            writer.write('{"not": "a receipt"}\n')

    writer = threading.Thread(target=feed)
    writer.start()
    code, stderr = run_cli("publish", "--topic", "receipts", str(fifo), env=NOWHERE)
    writer.join(timeout=10)
    assert code == 1
    line = assert_one_line(stderr)
    assert line.startswith(f"leo-activation: {fifo}:1: ")
    assert "nothing was published" in line


# ---------------------------------------------------------------- the database refuses consume
WRONG_PASSWORD = "not-the-password-1f3a"


@pytest.fixture
def password_role(db: DbUrls, local_stack_home: Path) -> Iterator[str]:
    """The application DSN as a role that must give its password (the local stack trusts every
    other role), the password in it wrong."""
    role = f"leo_pw_{uuid.uuid4().hex[:8]}"
    with connect(db.admin_url) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right' IN ROLE leo_application")
                     .format(sql.Identifier(role)))  # fmt: skip
        row = conn.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba = Path(row[0])
        original = hba.read_text()
        hba.write_text(f"host all {role} all scram-sha-256\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(1)  # the postmaster rereads the file on the signal
    try:
        yield conninfo.make_conninfo(db.app_url, user=role, password=WRONG_PASSWORD)
    finally:
        hba.write_text(original)
        with connect(db.admin_url) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _consume_against(settings: Settings, database_url: str) -> tuple[int, str, float]:
    started = time.monotonic()
    code, stderr = run_cli(
        "consume", "--until-idle", "30",
        env={**consumer_env(settings), "LEO_DATABASE_URL": database_url},
    )  # fmt: skip
    return code, stderr, time.monotonic() - started


def _assert_refused(code: int, stderr: str, elapsed: float, cause: str) -> None:
    assert code == 1, stderr
    # consume's start line (an INFO log record) comes first; the refusal is the one error line
    errors = [x for x in stderr.splitlines() if x.strip() and '"level":"INFO"' not in x]
    line = assert_one_line("\n".join(errors))
    assert line.startswith("leo-activation: the database cannot do what the product needs")
    assert cause in line
    assert elapsed < 20, f"took {elapsed:.0f}s: retried instead of failing fast"


def test_consume_with_an_unknown_role_fails_fast(settings: Settings, db: DbUrls) -> None:
    url = conninfo.make_conninfo(db.app_url, user="leo_nobody_here")
    _assert_refused(*_consume_against(settings, url), 'role "leo_nobody_here" does not exist')


def test_consume_with_a_missing_database_fails_fast(settings: Settings, db: DbUrls) -> None:
    url = with_database(db.app_url, "leo_no_such_database")
    _assert_refused(*_consume_against(settings, url), 'database "leo_no_such_database"')


def test_consume_with_a_wrong_password_fails_fast_and_never_prints_it(
    settings: Settings, password_role: str
) -> None:
    code, stderr, elapsed = _consume_against(settings, password_role)
    _assert_refused(code, stderr, elapsed, "password authentication failed")
    assert WRONG_PASSWORD not in stderr


def test_a_reader_that_went_away_is_no_traceback(tmp_path: Path) -> None:
    """`leo-activation dev status | head`: the output's reader closes early; like any Unix tool
    the command ends quietly (141, as a SIGPIPE would) instead of a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    env = {**os.environ, "LEO_DEV_HOME": str(tmp_path)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "leo_activation", "dev", "status"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""
