"""Mistakes an operator makes, driven through the CLI as a subprocess: each is one line on stderr
with the documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from leo_activation.db import connect
from leo_activation.kafka import ensure_topics
from leo_activation.migrate import MIGRATE_LOCK_KEY
from leo_activation.settings import Settings
from tests.fix_db import DbUrls
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


# ---------------------------------------------------------------------- operating rows
CLOSED = "127.0.0.1:1"  # nothing listens on port 1
SECRET = "s3cr3t-pw"
CLOSED_DSN = f"postgresql://leo_app:{SECRET}@{CLOSED}/leo"


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
    assert SECRET not in stderr


def test_verify_with_the_database_on_a_closed_port_is_one_line(settings: Settings) -> None:
    ensure_topics(settings)  # the broker answers, the database does not
    done = run_in(
        {**app_env(settings), "LEO_DATABASE_URL": CLOSED_DSN, "LEO_ADMIN_DATABASE_URL": CLOSED_DSN},
        "verify", "--idle", "1",
    )  # fmt: skip
    assert done.returncode == 1
    line = assert_one_line(done.stderr)
    assert "verify: database: connection failed" in line
    assert SECRET not in done.stderr


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
