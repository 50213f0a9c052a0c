"""The canonical state digest: proof that two databases hold the same state.

Per tenant and table: SHA-256 over each row's business columns in their PostgreSQL text form
(UTC), in primary-key order. Provenance columns (``PROVENANCE_COLUMNS``: where and when a row
arrived) are left out, since a replay legitimately changes them, and so are secrets
(``SECRET_COLUMNS``). A tenant's digest hashes its
table digests; the global digest hashes the tenants' digests in tenant-id order. Tables are read
from the catalog, so a new table is covered without touching this file; the work queues
(``WORK_QUEUE_TABLES``, empty at rest) are left out.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from leo_activation import db, ids
from leo_activation.errors import LeoError, reported
from leo_activation.resources import sql_text
from leo_activation.settings import Settings

PROVENANCE_COLUMNS = frozenset(
    {"source_topic", "source_partition", "source_offset", "source_timestamp_ms", "ingested_at"}
)
# Secrets: the data keys. Never hashed into a digest nor shown by verify; which keys exist (their
# ids) is state and digested.
SECRET_COLUMNS = frozenset({"data_key"})
# Work queues: empty at rest, they record work still to do, not state (like the consumer
# offsets). segment_snapshot_tag_pending holds sealed snapshots whose members' tags are not
# written yet; a pending tag still shows, in cdp_profiles.segment_snapshots.
WORK_QUEUE_TABLES = frozenset({"segment_snapshot_tag_pending"})


@dataclass(frozen=True)
class StateTable:
    name: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]  # business columns only


def state_tables(conn: psycopg.Connection[Any]) -> list[StateTable]:
    rows = conn.execute(sql_text("queries/ops/digest_tables.sql")).fetchall()
    return [
        StateTable(
            name,
            tuple(keys),
            tuple(c for c in cols if c not in PROVENANCE_COLUMNS | SECRET_COLUMNS),
        )
        for name, keys, cols in rows
        if name != "leo_schema_migrations" and name not in WORK_QUEUE_TABLES
    ]


def row_texts(
    conn: psycopg.Connection[Any], table: StateTable, tenant_id: uuid.UUID
) -> psycopg.Cursor[Any]:
    """The canonical text of each of a tenant's rows, in key order (caller is in a transaction)."""
    query = sql.SQL(
        "SELECT ({})::text, ({})::text FROM {} WHERE tenant_id = %s ORDER BY {}"
    ).format(
        sql.SQL("ROW({})").format(sql.SQL(", ").join(map(sql.Identifier, table.key_columns))),
        sql.SQL("ROW({})").format(sql.SQL(", ").join(map(sql.Identifier, table.columns))),
        sql.Identifier(table.name),
        sql.SQL(", ").join(map(sql.Identifier, table.key_columns)),
    )
    cursor = conn.cursor(name=f"digest_{table.name}")
    cursor.itersize = 5000
    cursor.execute(query, (tenant_id,))
    return cursor


def tenant_digest(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> dict[str, str]:
    """Per-table digests of one tenant's state (read in one snapshot)."""
    digests: dict[str, str] = {}
    with db.tenant_transaction(conn, tenant_id):
        conn.execute(sql_text("queries/ops/canonical_text_settings.sql"))
        for table in state_tables(conn):
            h = hashlib.sha256()
            with row_texts(conn, table, tenant_id) as cursor:
                for _key, text in cursor:
                    h.update(text.encode())
                    h.update(b"\n")
            digests[table.name] = h.hexdigest()
    return digests


def combine(parts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(f"{name}:{parts[name]}\n".encode())
    return h.hexdigest()


def list_tenants(admin_dsn: str) -> list[uuid.UUID]:
    """Every tenant id. Needs a role that reads across tenants (superuser or BYPASSRLS)."""
    with db.connect(admin_dsn) as conn:
        row = conn.execute(sql_text("queries/ops/digest_reads_all_tenants.sql")).fetchone()
        if not (row and row[0]):
            raise LeoError(
                "a digest of every tenant needs LEO_ADMIN_DATABASE_URL with a role that can read "
                "all tenants (superuser or BYPASSRLS); or pass --tenant"
            )
        return [r[0] for r in conn.execute(sql_text("queries/ops/digest_tenants.sql"))]


def state_digest(
    settings: Settings, tenant: uuid.UUID | None = None
) -> tuple[str, dict[uuid.UUID, dict[str, str]]]:
    """(digest, per-tenant per-table digests) of one tenant or of all."""
    if tenant is not None:
        tenants, dsn = [tenant], settings.require_database()
    else:
        dsn = settings.require_admin_database()
        tenants = list_tenants(dsn)
    with db.connect(dsn) as conn:
        per_tenant = {t: tenant_digest(conn, t) for t in tenants}
    if tenant is not None:
        return combine(per_tenant[tenant]), per_tenant
    return combine({str(t): combine(d) for t, d in per_tenant.items()}), per_tenant


def cli_digest(settings: Settings, args: Any) -> int:
    tenant = ids.parse(args.tenant, "--tenant") if args.tenant else None
    with reported("digest"):
        digest, per_tenant = state_digest(settings, tenant)
    print(digest)
    if args.tables:
        for t, tables in sorted(per_tenant.items()):
            for name, value in sorted(tables.items()):
                print(f"{t} {name} {value}")
    return 0
