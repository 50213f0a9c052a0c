"""Core database access shared by the consumers, the CLI and the tests.

Three things live here and nothing else: how to open a connection, how to run work in one
tenant's row-level-security context (per transaction, never per session), and how to judge a
database error (``classify``): transient (retry with backoff), a database that cannot do what the
product needs (stop), or bad data (dead-letter the message).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql
from psycopg.pq import TransactionStatus

from leo_activation.errors import LeoError
from leo_activation.resources import sql_text

APPLICATION_NAME = "leo-activation"
CONNECT_TIMEOUT_S = 10


class Fault(enum.Enum):
    """What a database error says, and so what the consumer does with it."""

    TRANSIENT = "transient"  # try again later: retried with backoff, never dead-lettered
    INCAPABLE = "incapable"  # this database cannot do what the product needs: stop, commit nothing
    DATA = "data"  # this input can never be applied: narrowed down to its message, dead-lettered


# SQLSTATE (a five-character code, or a two-character class) -> fault; codes win over classes,
# and what is not listed is a property of the input (DATA): constraint violations, bad values,
# program limits (class 54, e.g. an oversize index row: retrying it would block for ever).
_FAULTS: dict[str, Fault] = {
    "08": Fault.TRANSIENT,  # connection exception
    "53": Fault.TRANSIENT,  # insufficient resources: disk full, out of memory, too many connections
    "40001": Fault.TRANSIENT,  # serialization_failure
    "40P01": Fault.TRANSIENT,  # deadlock_detected
    "40003": Fault.TRANSIENT,  # statement_completion_unknown
    "55P03": Fault.TRANSIENT,  # lock_not_available (lock_timeout / NOWAIT)
    "57014": Fault.TRANSIENT,  # query_canceled (statement_timeout, pg_cancel_backend)
    "57P01": Fault.TRANSIENT,  # admin_shutdown
    "57P02": Fault.TRANSIENT,  # crash_shutdown
    "57P03": Fault.TRANSIENT,  # cannot_connect_now (starting up, recovery)
    "57P05": Fault.TRANSIENT,  # idle_session_timeout
    "25P03": Fault.TRANSIENT,  # idle_in_transaction_session_timeout
    "25P04": Fault.TRANSIENT,  # transaction_timeout
    "58030": Fault.TRANSIENT,  # io_error
    "0A": Fault.INCAPABLE,  # feature_not_supported (an older or different server)
    "42501": Fault.INCAPABLE,  # insufficient_privilege (a grant missing or revoked)
    "42P01": Fault.INCAPABLE,  # undefined_table (not migrated, or migrated elsewhere)
    "42883": Fault.INCAPABLE,  # undefined_function
    "28000": Fault.INCAPABLE,  # invalid_authorization_specification (unknown role)
    "28P01": Fault.INCAPABLE,  # invalid_password
    "3D000": Fault.INCAPABLE,  # invalid_catalog_name (no such database)
}


def connect(
    dsn: str, *, autocommit: bool = True, application_name: str = APPLICATION_NAME
) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection with the project's defaults.

    Autocommit by default: every unit of work then opens its own explicit transaction
    (``tenant_transaction`` / ``conn.transaction()``), so a stray statement can never leave an
    implicit transaction open that would turn the next ``transaction()`` into a savepoint whose
    work is committed by nobody.

    ``application_name`` and ``connect_timeout`` are only filled in when the DSN does not name
    them; nothing is set through the ``options`` startup parameter, so the connection also works
    through PgBouncer. ``prepare_threshold`` keeps psycopg's default.
    """
    params = conninfo.conninfo_to_dict(dsn)
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return psycopg.connect(conninfo.make_conninfo("", **params), autocommit=autocommit)


def with_database(dsn: str, dbname: str) -> str:
    """The same DSN pointed at another database (URL form stays a URL, key=value stays k=v)."""
    parts = urlsplit(dsn)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path="/" + dbname))
    return conninfo.make_conninfo(dsn, dbname=dbname)


def canonical_tenant(tenant_id: uuid.UUID | str) -> str:
    """The canonical text of a tenant id; raises ``ValueError`` if it is not a UUID."""
    return str(tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(tenant_id))


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID | str
) -> Iterator[psycopg.Connection[Any]]:
    """Run the block in a transaction whose tenant context is ``tenant_id``.

    The tenant is set with ``SET LOCAL`` (``set_tenant_context``), so it ends with the
    transaction and a pooled connection never carries it into the next one.
    On an idle connection this opens, and on success commits, a transaction. Inside an already
    open transaction it uses a savepoint and, on success, restores the previous tenant setting,
    so the context never outlives the block either way (a rolled-back savepoint restores it by
    itself).
    """
    tenant = canonical_tenant(tenant_id)
    if conn.info.transaction_status == TransactionStatus.IDLE:
        with conn.transaction():
            set_tenant_context(conn, tenant)
            yield conn
        return
    row = conn.execute(sql_text("queries/tenancy/get_context.sql")).fetchone()
    previous = "" if row is None or row[0] is None else str(row[0])
    with conn.transaction():
        set_tenant_context(conn, tenant)
        yield conn
    set_tenant_context(conn, previous)


def set_tenant_context(conn: psycopg.Connection[Any], setting: str) -> None:
    """Set ``app.current_tenant_id`` to ``setting`` (verbatim) for the current transaction, in
    the form Citus passes on to its workers (``queries/tenancy/set_context.sql``)."""
    conn.execute(sql.SQL(sql_text("queries/tenancy/set_context.sql")).format(sql.Literal(setting)))


def check_tenant_context(conn: psycopg.Connection[Any]) -> None:
    """Raise ``LeoError`` on a Citus database whose sessions do not pass ``SET LOCAL`` on to the
    workers: the tenant context would not reach the shards, where every write would be refused
    and every read see nothing (``migrate`` sets it for the database). A database without the
    function the tenant policies read raises the driver's error (``undefined_function``)."""
    row = conn.execute(sql_text("queries/citus/set_commands.sql")).fetchone()
    if row is not None and row[0] and row[1] != "local":
        raise LeoError(
            f"this Citus database has citus.propagate_set_commands = {row[1]!r}, so the tenant "
            "context would not reach the workers: run `leo-activation migrate` (it sets 'local')"
        )


def written(cursor: psycopg.Cursor[Any]) -> int:
    """The number of rows a statement wrote, as it returns it (``SELECT count(*) FROM written``
    over its ``RETURNING``): on Citus, the command's row count of a write the coordinator runs is
    the number of rows it sent, not of those written."""
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def classify(exc: BaseException) -> Fault:
    """The fault ``exc`` is, judged on it and on the exceptions it was raised from (the most
    serious wins: INCAPABLE, then TRANSIENT, then DATA).

    A failed connection carries no SQLSTATE in psycopg, only the server's message: it is
    INCAPABLE when the server refused the credentials or the database, TRANSIENT otherwise (lost
    or refused connection, server starting). ``InterfaceError`` about the connection's state is
    TRANSIENT; any other exception is DATA.
    """
    faults: set[Fault] = set()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        faults.add(_classify_one(current))
        current = current.__cause__
    for fault in (Fault.INCAPABLE, Fault.TRANSIENT):
        if fault in faults:
            return fault
    return Fault.DATA


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying (see ``classify``)."""
    return classify(exc) is Fault.TRANSIENT


def _classify_one(exc: BaseException) -> Fault:
    if isinstance(exc, psycopg.InterfaceError):
        return Fault.TRANSIENT if "connection is" in str(exc) else Fault.DATA
    if not isinstance(exc, psycopg.Error):
        return Fault.DATA
    sqlstate = exc.sqlstate or _connect_sqlstate(exc)
    if sqlstate is None:
        # Raised by the client, not the server: connection failed, lost, or already closed.
        return Fault.TRANSIENT if isinstance(exc, psycopg.OperationalError) else Fault.DATA
    return _FAULTS.get(sqlstate, _FAULTS.get(sqlstate[:2], Fault.DATA))


# The server's refusals at connection time, which psycopg reports without their SQLSTATE.
_CONNECT_REFUSALS = (
    (re.compile(r"password authentication failed for user"), "28P01"),
    (re.compile(r'role "[^"]*" does not exist|pg_hba\.conf|authentication failed'), "28000"),
    (re.compile(r'database "[^"]*" does not exist'), "3D000"),
)


def _connect_sqlstate(exc: psycopg.Error) -> str | None:
    if not isinstance(exc, psycopg.OperationalError):
        return None
    text = str(exc)
    return next((state for pattern, state in _CONNECT_REFUSALS if pattern.search(text)), None)
