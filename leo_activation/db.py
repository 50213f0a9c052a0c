"""Core database access shared by the consumers, the CLI and the tests.

Three things live here and nothing else: how to open a connection, how to run work in one
tenant's row-level-security context (per transaction, never per session), and how to
tell a transient database fault (retry with backoff) from a deterministic one (dead-letter).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo
from psycopg.pq import TransactionStatus

from leo_activation.resources import sql_text

APPLICATION_NAME = "leo-activation"
CONNECT_TIMEOUT_S = 10

# SQLSTATEs that say "try again later", not "this input can never be applied".
_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "40003",  # statement_completion_unknown
        "55P03",  # lock_not_available (lock_timeout / NOWAIT)
        "57014",  # query_canceled (statement_timeout, pg_cancel_backend)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, recovery)
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout
        "25P04",  # transaction_timeout
        "58030",  # io_error
    }
)
# Whole classes: 08 connection exception, 53 insufficient resources (disk full, out of memory,
# too many connections). Class 54 (program limit exceeded, e.g. an oversize index row) is NOT
# here: it is a property of the input and retrying it would block the consumer forever.
_TRANSIENT_CLASSES = frozenset({"08", "53"})


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

    The tenant is set with ``set_config(..., true)`` (the ``SET LOCAL`` of a function call), so
    it ends with the transaction and a pooled connection never carries it into the next one.
    On an idle connection this opens, and on success commits, a transaction. Inside an already
    open transaction it uses a savepoint and, on success, restores the previous tenant setting,
    so the context never outlives the block either way (a rolled-back savepoint restores it by
    itself).
    """
    tenant = canonical_tenant(tenant_id)
    if conn.info.transaction_status == TransactionStatus.IDLE:
        with conn.transaction():
            _set_tenant(conn, tenant)
            yield conn
        return
    row = conn.execute(sql_text("queries/tenancy/get_context.sql")).fetchone()
    previous = "" if row is None or row[0] is None else str(row[0])
    with conn.transaction():
        _set_tenant(conn, tenant)
        yield conn
    _set_tenant(conn, previous)


def _set_tenant(conn: psycopg.Connection[Any], tenant: str) -> None:
    conn.execute(sql_text("queries/tenancy/set_context.sql"), {"tenant": tenant})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a database fault worth retrying.

    Transient: a lost or refused connection (``OperationalError`` without a server SQLSTATE,
    ``InterfaceError`` about the connection's state), server shutdown / restart / recovery
    (57P01, 57P02, 57P03), serialization failure (40001), deadlock (40P01), too many connections
    and other resource exhaustion (class 53), lock and statement timeouts. Everything else,
    notably constraint violations, bad data and program limits, is a property of the input.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_transient_one(current):
            return True
        current = current.__cause__
    return False


def _is_transient_one(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.InterfaceError):
        return "connection is" in str(exc)
    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        # Raised by the client, not the server: connection failed, lost, or already closed.
        return isinstance(exc, psycopg.OperationalError)
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_CLASSES
