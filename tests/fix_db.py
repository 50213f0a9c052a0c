"""Database fixtures (pytest plugin, loaded by conftest through ``pytest_plugins``).

- ``db_template`` (session): a database ``leo_tpl_<schema checksum[:12]>`` migrated with
  ``leo_activation.migrate.migrate``; created once per schema version and reused afterwards.
- ``db`` (function): a fresh database cloned from the template (``CREATE DATABASE ... TEMPLATE``:
  milliseconds), dropped ``WITH (FORCE)`` after the test; ``fresh_database(stack, template)`` is
  the same as a context manager, for tests that need several.

Helpers: ``tenant_tx`` (a transaction in one tenant's context, taking the setting verbatim so
tests can also set '' or garbage) and ``make_tenant`` (inserts a tenant row as the application
role, through the tenant table's own policy, as the product does).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from leo_activation.db import connect, set_tenant_context, tenant_transaction, with_database
from leo_activation.dev import citus
from leo_activation.dev.stack import Endpoints
from leo_activation.migrate import ensure_app_role, migrate, schema_checksum

FIXED_TIME = datetime(2025, 1, 1, tzinfo=UTC)
CITUS_TEST_SHARDS = 8
_CLONE_ATTEMPTS = 20


@dataclass(frozen=True)
class DbUrls:
    """DSNs of one test database: as the owner/superuser and as the application role."""

    admin_url: str
    app_url: str
    name: str


def _create_database(admin_url: str, name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    with connect(admin_url, autocommit=True) as conn:
        for attempt in range(1, _CLONE_ATTEMPTS + 1):
            try:
                conn.execute(statement)
                return
            except errors.ObjectInUse:
                # "source database is being accessed by other users": another session is still
                # migrating the template; it lets go within moments.
                if attempt == _CLONE_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt)


def drop_database(admin_url: str, name: str) -> None:
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def db_template(stack: Endpoints) -> str:
    """Name of the migrated template database for the current schema checksum."""
    return template_for(stack)


def template_for(stack: Endpoints) -> str:
    """The migrated template database on ``stack``'s server (made once per schema version)."""
    admin_url = stack.admin_database_url
    if citus.node_dsns(admin_url):
        return _citus_template(stack)
    name = f"leo_tpl_{schema_checksum()[:12]}"
    with connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists is None:
        # another session may create it meanwhile; migrate below serialises on its lock
        with contextlib.suppress(errors.DuplicateDatabase):
            _create_database(admin_url, name)
    migrate(with_database(admin_url, name), with_database(stack.database_url, name))
    return name


def _citus_template(stack: Endpoints) -> str:
    """The migrated, distributed template on every node of the Citus cluster, in 8 shards (more
    than one is all a test needs; fewer make each copy faster)."""
    name = citus.template_name(f"leo_ctpl{CITUS_TEST_SHARDS}_")
    return citus.template(
        stack.admin_database_url, stack.database_url, name, shard_count=CITUS_TEST_SHARDS
    )


@contextmanager
def fresh_database(stack: Endpoints, template: str) -> Iterator[DbUrls]:
    """A new database cloned from ``template``, dropped (``WITH (FORCE)``) on exit; on a Citus
    cluster, on every node."""
    name = f"leo_t_{uuid.uuid4().hex[:12]}"
    admin_url = stack.admin_database_url
    distributed = bool(citus.node_dsns(admin_url))
    if distributed:
        citus.create_database(admin_url, name, template=template)
    else:
        _create_database(admin_url, name, template=template)
    try:
        urls = DbUrls(
            admin_url=with_database(admin_url, name),
            app_url=with_database(stack.database_url, name),
            name=name,
        )
        # Database-level grants (CONNECT, TEMPORARY) and settings live in the shared catalog and
        # are not copied from the template; on Citus, migrate sets them again (it applies nothing
        # else: the schema is the template's).
        if distributed:
            migrate(urls.admin_url, urls.app_url)
        else:
            with connect(urls.admin_url, autocommit=True) as conn:
                ensure_app_role(conn, urls.app_url)
        yield urls
    finally:
        if distributed:
            citus.drop_database(admin_url, name)
        else:
            drop_database(admin_url, name)


@pytest.fixture
def db(stack: Endpoints, db_template: str) -> Iterator[DbUrls]:
    """A fresh, migrated database of its own for one test."""
    with fresh_database(stack, db_template) as urls:
        yield urls


@contextmanager
def tenant_tx(conn: psycopg.Connection[Any], tenant_id: uuid.UUID | str) -> Iterator[None]:
    """A transaction with ``app.current_tenant_id`` set (transaction-local) to ``tenant_id``.

    The value is passed verbatim, so tests can also set '' or a malformed id; product code uses
    ``leo_activation.db.tenant_transaction``, which insists on a UUID.
    """
    with conn.transaction():
        set_tenant_context(conn, str(tenant_id))
        yield


def make_tenant(
    app_url: str, tenant_id: uuid.UUID | str, name: str, *, status: str = "active"
) -> uuid.UUID:
    """Insert a tenant row as the application role, in that tenant's own context."""
    tenant = uuid.UUID(str(tenant_id))
    with connect(app_url) as conn, tenant_transaction(conn, tenant):
        conn.execute(
            "INSERT INTO tenant (tenant_id, tenant_name, status, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (tenant, name, status, FIXED_TIME, FIXED_TIME),
        )
    return tenant
