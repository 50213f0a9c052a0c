"""Mistakes an operator makes, driven through the CLI as a subprocess: each is one line on stderr
with the documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import conninfo, sql

from leo_activation.db import connect, with_database
from leo_activation.settings import Settings
from tests.fix_db import DbUrls
from tests.test_faults import consumer_env


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
    line = assert_one_line(stderr)
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
