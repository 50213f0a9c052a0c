"""``leo-activation migrate``: apply the ordered SQL migrations and set up the application role.

Rules (sql/README.md): files ``sql/migrations/NNNN_name.sql`` are applied in name order, each in its
own transaction, and recorded with the sha256 of their bytes. An applied file is immutable: if its
checksum changed, migrate refuses to run. A run holds a session advisory lock, so concurrent runs
against one database serialise and each migration is applied exactly once.

The bookkeeping table lives in the schema ``leo_meta``, on which neither PUBLIC nor the application
has any privilege: it is the owner's, not tenant data, so it stays out of ``public`` (where every
table is tenant-scoped and row-level secured) instead of carrying a pretend tenant policy.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, errors, sql
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from leo_activation.db import connect
from leo_activation.distribution import distribute
from leo_activation.errors import LeoError, first_line
from leo_activation.resources import sql_dir, sql_text
from leo_activation.settings import Settings

log = logging.getLogger("leo_activation.migrate")
APPLICATION_GROUP = "leo_application"
DEFAULT_LOCK_TIMEOUT_S = 300.0
# Session advisory lock key of a migrate run (any fixed 64-bit number; this is b"leo-migr").
MIGRATE_LOCK_KEY = 0x6C656F2D6D696772
_FILE_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
# pg_roles column -> (wanted value, keyword that sets it) for the application login role.
_APP_ROLE_ATTRIBUTES: dict[str, tuple[bool, str]] = {
    "rolcanlogin": (True, "LOGIN"),
    "rolsuper": (False, "NOSUPERUSER"),
    "rolbypassrls": (False, "NOBYPASSRLS"),
    "rolcreatedb": (False, "NOCREATEDB"),
    "rolcreaterole": (False, "NOCREATEROLE"),
    "rolinherit": (True, "INHERIT"),
}
_GROUP_ROLE_ATTRIBUTES = {k: _APP_ROLE_ATTRIBUTES[k] for k in ("rolbypassrls", "rolcreatedb")}
# Errors two migrate runs on *different* databases of one cluster can hit when both create or
# alter the same (cluster-wide) role at the same moment; the advisory lock is per database.
_ROLE_RACE = (errors.DuplicateObject, errors.UniqueViolation, errors.InternalError_)
_ROLE_ATTEMPTS = 5


@dataclass(frozen=True)
class Migration:
    name: str
    path: Path
    checksum: str

    def text(self) -> bytes:
        return self.path.read_bytes()


def migrations_path(migrations_dir: Path | None = None) -> Path:
    return migrations_dir if migrations_dir is not None else sql_dir() / "migrations"


def discover(migrations_dir: Path | None = None) -> list[Migration]:
    """Every migration file in order; a ``.sql`` file not named ``NNNN_name.sql`` is an error."""
    found: list[Migration] = []
    for path in sorted(migrations_path(migrations_dir).glob("*.sql")):
        if not _FILE_NAME.match(path.name):
            raise LeoError(f"migration file {path.name} is not named NNNN_lower_snake.sql")
        found.append(Migration(path.name, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    numbers = [m.name[:4] for m in found]
    if len(set(numbers)) != len(numbers):
        raise LeoError(f"two migration files share a number in {migrations_path(migrations_dir)}")
    return found


def schema_checksum(migrations_dir: Path | None = None) -> str:
    """sha256 over the ordered (name, checksum) list of every migration: names template DBs."""
    digest = hashlib.sha256()
    for migration in discover(migrations_dir):
        digest.update(f"{migration.name}\0{migration.checksum}\n".encode())
    return digest.hexdigest()


def migrate(
    admin_dsn: str,
    app_dsn: str,
    *,
    migrations_dir: Path | None = None,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply every pending migration, distribute the tables on Citus (when the database has the
    ``citus`` extension: ``distribution.distribute``), then ensure the application role; return
    the names applied. ``report`` hears one line per change the distribution made.

    ``admin_dsn`` connects as the schema owner (a superuser or a role with CREATEROLE that owns
    the database); ``app_dsn`` names the application's login role and password. Raises
    ``LeoError`` if an applied migration's file changed or vanished, or if another run still
    holds the migration lock after ``lock_timeout_s``.
    """
    migrations = discover(migrations_dir)
    applied: list[str] = []
    with connect(admin_dsn, autocommit=True, application_name="leo-activation migrate") as conn:
        conn.execute(sql_text("queries/ops/migrate_session.sql"))
        _take_lock(conn, lock_timeout_s)
        try:
            _ensure_bookkeeping(conn)
            recorded = _recorded(conn)
            _check_unchanged(migrations, recorded)
            for migration in migrations:
                if migration.name in recorded:
                    continue
                _apply(conn, migration)
                applied.append(migration.name)
            for line in distribute(conn):
                log.info("%s", line)
                if report is not None:
                    report(line)
            ensure_app_role(conn, app_dsn)
        finally:
            # Closing the session releases the lock too; never mask the error that got us here.
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql_text("queries/ops/migrate_unlock.sql"), {"key": MIGRATE_LOCK_KEY})
    return applied


def _take_lock(conn: psycopg.Connection[Any], timeout_s: float) -> None:
    """The migration lock, waiting at most ``timeout_s`` for a run that holds it (said once)."""

    def try_lock() -> bool:
        row = conn.execute(
            sql_text("queries/ops/migrate_lock.sql"), {"key": MIGRATE_LOCK_KEY}
        ).fetchone()
        return bool(row and row[0])

    if try_lock():
        return
    holder = conn.execute(
        sql_text("queries/ops/migrate_lock_holder.sql"), {"key": MIGRATE_LOCK_KEY}
    ).fetchone()
    who = f" (server process {holder[0]})" if holder else ""
    log.warning(
        "another migrate run holds the migration lock%s; waiting up to %.0fs", who, timeout_s
    )
    retrying = Retrying(
        retry=retry_if_result(lambda locked: not locked),
        wait=wait_fixed(0.5),
        stop=stop_after_delay(timeout_s),
        retry_error_callback=lambda _: False,
    )
    if not retrying(try_lock):
        raise LeoError(
            f"another migrate run still holds the migration lock{who} after {timeout_s:.0f}s; "
            "let it finish, or stop it, and run migrate again"
        )


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(sql_text("queries/ops/migrate_search_path.sql"))
            # trigger DDL on tables Citus distributed already (placeholders without Citus)
            conn.execute(sql_text("queries/citus/session.sql"))
            conn.execute(migration.text())
            conn.execute(
                sql_text("queries/ops/migrate_record.sql"),
                {"name": migration.name, "checksum": migration.checksum},
            )
    except psycopg.DatabaseError as exc:
        raise LeoError(
            f"migration {migration.name} failed, nothing of it applied: {first_line(exc)}"
        ) from exc


def _ensure_bookkeeping(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(sql_text("queries/ops/migrate_bookkeeping.sql").encode())


def _recorded(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(sql_text("queries/ops/applied_migrations.sql")).fetchall()
    return {str(name): str(checksum) for name, checksum in rows}


def _check_unchanged(migrations: list[Migration], recorded: dict[str, str]) -> None:
    on_disk = {m.name: m for m in migrations}
    for name in sorted(recorded):
        migration = on_disk.get(name)
        if migration is None:
            raise LeoError(
                f"migration {name} is recorded as applied but its file is missing "
                f"(recorded sha256 {recorded[name]}); migrations are never removed"
            )
        if migration.checksum != recorded[name]:
            raise LeoError(
                f"migration {name} changed after it was applied: recorded sha256 "
                f"{recorded[name]}, file sha256 {migration.checksum}; write a new migration instead"
            )
    pending_before_applied = [
        m.name for m in migrations if m.name not in recorded and m.name < max(recorded, default="")
    ]
    if pending_before_applied:
        raise LeoError(
            f"migration {pending_before_applied[0]} sorts before an already-applied migration; "
            "renumber it after the last applied one"
        )


def app_role_name(app_dsn: str) -> str:
    """The login role named by ``app_dsn``; raises ``LeoError`` if it names none."""
    user = conninfo.conninfo_to_dict(app_dsn).get("user")
    if not user:
        raise LeoError("the application DSN names no user; put the role in LEO_DATABASE_URL")
    return str(user)


def ensure_app_role(conn: psycopg.Connection[Any], app_dsn: str) -> str:
    """Create (or lock down) the application login role and grant it what it needs.

    The role is ``LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE INHERIT``, gets the
    DSN's password (when there is one), membership of ``leo_application`` and ``CONNECT`` and
    ``TEMPORARY`` on the current database. Refuses a role that is the connected (owner) role, a
    superuser, or owns anything here: row-level security would not apply to it. ``conn`` must be
    in autocommit mode; each attempt runs in its own transaction.
    """
    role = app_role_name(app_dsn)
    password = conninfo.conninfo_to_dict(app_dsn).get("password")
    for attempt in range(1, _ROLE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                _ensure_app_role_once(conn, role, None if password is None else str(password))
            return role
        except _ROLE_RACE as exc:
            race = not isinstance(exc, errors.InternalError_) or "concurrently" in str(exc)
            if not race or attempt == _ROLE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _ensure_app_role_once(conn: psycopg.Connection[Any], role: str, password: str | None) -> None:
    row = conn.execute(sql_text("queries/ops/migrate_owner.sql")).fetchone()
    assert row is not None
    owner, database = str(row[0]), str(row[1])
    if role == owner:
        raise LeoError(
            f"the application role {role} is the migrating (owner) role; row-level security "
            "does not apply to owners: give LEO_DATABASE_URL its own role"
        )
    for name in (role, APPLICATION_GROUP):
        if _role_attributes(conn, name).get("rolsuper"):
            raise LeoError(
                f"role {name} is a superuser; row-level security does not apply to it: "
                "the application needs an ordinary role"
            )
    ident = sql.Identifier(role)
    if not _role_attributes(conn, role):
        keywords = " ".join(keyword for _, keyword in _APP_ROLE_ATTRIBUTES.values())
        conn.execute(sql.SQL("CREATE ROLE {} WITH ").format(ident) + sql.SQL(keywords))
    _lock_down(conn, role, _APP_ROLE_ATTRIBUTES)
    _lock_down(conn, APPLICATION_GROUP, _GROUP_ROLE_ATTRIBUTES)
    if password is not None:
        # Hashed client-side (PQencryptPasswordConn, the server's password_encryption), so the
        # plain password never appears in a statement or a server log.
        hashed = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(hashed)))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APPLICATION_GROUP), ident))
    conn.execute(
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
            sql.Identifier(database), ident
        )
    )
    owned = conn.execute(
        sql_text("queries/ops/migrate_app_role_owned.sql"),
        {"role": role, "group": APPLICATION_GROUP},
    ).fetchone()
    if owned is not None and owned[0]:
        raise LeoError(
            f"the application role {role} (or {APPLICATION_GROUP}) owns {owned[0]} relations in "
            f"{database}; row-level security does not apply to owners: reassign them"
        )


def _role_attributes(conn: psycopg.Connection[Any], role: str) -> dict[str, bool]:
    """The role's flags from pg_roles, or {} if there is no such role."""
    columns = sql.SQL(", ").join(map(sql.Identifier, _APP_ROLE_ATTRIBUTES))
    cur = conn.execute(
        sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(columns), (role,)
    )
    row = cur.fetchone()
    if row is None:
        return {}
    assert cur.description is not None
    return {col.name: bool(value) for col, value in zip(cur.description, row, strict=True)}


def _lock_down(
    conn: psycopg.Connection[Any], role: str, wanted: dict[str, tuple[bool, str]]
) -> None:
    """ALTER only the attributes that differ (changing SUPERUSER or BYPASSRLS at all needs that
    attribute, which a non-superuser migrating role on a managed server does not have)."""
    actual = _role_attributes(conn, role)
    fixes = [kw for col, (value, kw) in wanted.items() if actual.get(col, value) != value]
    if fixes:
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH ").format(sql.Identifier(role)) + sql.SQL(" ".join(fixes))
        )


def cli_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations, print what was applied (or that nothing was), return 0."""
    admin_dsn = settings.require_admin_database()
    app_dsn = settings.require_database()
    lock_timeout = DEFAULT_LOCK_TIMEOUT_S if args.lock_timeout is None else args.lock_timeout
    try:
        distribution: list[str] = []
        applied = migrate(
            admin_dsn, app_dsn, lock_timeout_s=lock_timeout, report=distribution.append
        )
    except psycopg.Error as exc:
        raise LeoError(f"migrate failed: {first_line(exc)}") from exc
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"schema up to date: {len(discover())} migrations")
    for line in distribution:
        print(line)
    return 0
