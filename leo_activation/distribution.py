"""Citus: every tenant table distributed by ``tenant_id`` and co-located with ``tenant``.

``migrate`` runs this after the migrations whenever the ``citus`` extension is installed in the
database (a single server has none, and nothing here runs there). It is idempotent: it
distributes the tables of ``public`` that are not distributed yet, so a table a later migration
adds is distributed by the next ``migrate`` without that migration knowing about Citus:

- a table with a ``tenant_id`` is distributed by it, co-located with ``tenant`` (the cluster's
  shard count, ``citus.shard_count``), so a tenant's rows of every table live on one shard group
  and a statement naming the tenant runs on one node; ``tenant`` first, then the others in
  foreign-key order (a referenced table before the tables referencing it);
- a table without one becomes a reference table (a copy on every node);
- the database passes a transaction's ``SET LOCAL`` commands on to the workers
  (``citus.propagate_set_commands``), so the tenant context reaches the shards;
- a table whose tenant policy has one server's form (an InitPlan, which Citus refuses in a
  policy) is isolated again first (``leo_isolate_tenant`` picks the database's form);
- the coordinator's own copies of rows distributed (a database that was single-server) are
  emptied: they are in the shards, and must not stay readable on the coordinator's disk;
- the statement-level reference checks (``leo_check_reference``, ``sql/migrations/0007``) become
  the foreign keys they stand for: a shard cannot look up another table from a trigger, and
  co-located foreign keys are checked on the shard itself.

Everything runs in one transaction: a failure leaves nothing half-distributed.
"""

from __future__ import annotations

import graphlib
from typing import Any

import psycopg
from psycopg import sql

from leo_activation.errors import LeoError
from leo_activation.resources import sql_text

TENANT_TABLE = "tenant"


def citus_version(conn: psycopg.Connection[Any]) -> str | None:
    """The citus extension's version in this database, or None (a single server)."""
    row = conn.execute(sql_text("queries/citus/installed.sql")).fetchone()
    return None if row is None else str(row[0])


def distribute(conn: psycopg.Connection[Any]) -> list[str]:
    """Distribute what is not distributed yet; one line per kind of change made, or one saying
    there was nothing to do (none at all without the citus extension). ``conn`` is in autocommit
    mode; the work runs in one transaction."""
    version = citus_version(conn)
    if version is None:
        return []
    done: list[str] = []
    with conn.transaction():
        conn.execute(sql_text("queries/citus/session.sql"))
        one_server = conn.execute(sql_text("queries/citus/policies_to_convert.sql")).fetchall()
        for (table,) in one_server:
            conn.execute(sql_text("queries/citus/isolate.sql"), {"table": table})
        if one_server:
            done.append(
                f"citus: tenant policies in the form Citus distributes: {len(one_server)} tables"
            )
        checks = conn.execute(sql_text("queries/citus/reference_triggers.sql")).fetchall()
        for table, trigger, referenced, columns in checks:
            _reference_as_foreign_key(conn, table, trigger, referenced, columns.split(","))
        if checks:
            done.append(
                "citus: reference checks became foreign keys: "
                + ", ".join(f"{table} -> {referenced}" for table, _, referenced, _ in checks)
            )
        pending = {
            name: (bool(has_tenant), set(references))
            for name, has_tenant, references in conn.execute(sql_text("queries/citus/tables.sql"))
        }
        distributed, replicated = [], []
        for table in _foreign_key_order(pending):
            has_tenant = pending[table][0]
            if has_tenant:
                colocate = "default" if table == TENANT_TABLE else TENANT_TABLE
                conn.execute(
                    sql_text("queries/citus/distribute.sql"),
                    {"table": table, "colocate_with": colocate},
                )
                distributed.append(table)
            else:
                conn.execute(sql_text("queries/citus/reference_table.sql"), {"table": table})
                replicated.append(table)
        if distributed:
            _empty_local_copies(conn, distributed)
            row = conn.execute(sql_text("queries/citus/shard_count.sql")).fetchone()
            shards = "?" if row is None else row[0]
            done.append(
                f"citus {version}: distributed {len(distributed)} tables by tenant_id, "
                f"co-located with {TENANT_TABLE} in {shards} shards: {', '.join(distributed)}"
            )
        if replicated:
            done.append(f"citus {version}: reference tables (no tenant): {', '.join(replicated)}")
        if _propagate_set_commands(conn):
            done.append(
                f"citus {version}: SET LOCAL reaches the workers "
                "(citus.propagate_set_commands = 'local' for this database)"
            )
    return done or [f"citus {version}: every table is distributed already"]


def _empty_local_copies(conn: psycopg.Connection[Any], distributed: list[str]) -> None:
    """Empty the coordinator's own copy of the rows of the ``distributed`` tables that had some
    (a database that ran on one server). The triggers are set aside only then: that needs a
    superuser, which a database distributed empty (the usual way) is never asked for."""
    local = [
        table
        for table in distributed
        if conn.execute(sql_text("queries/citus/local_rows.sql"), {"table": table}).fetchone()
        == (True,)
    ]
    if not local:
        return
    conn.execute(sql_text("queries/citus/local_rows_off.sql"))
    for table in reversed(local):  # a referencing table before what it references
        conn.execute(sql_text("queries/citus/truncate_local.sql"), {"table": table})


def _propagate_set_commands(conn: psycopg.Connection[Any]) -> bool:
    """Make the database pass SET LOCAL on to the workers (the tenant context is one); True if
    it did not yet. A database default, so the tenant's transaction needs no statement more."""
    row = conn.execute(sql_text("queries/citus/propagate_set.sql")).fetchone()
    if row is not None and row[0]:
        return False
    database = conn.execute(sql_text("queries/ops/migrate_owner.sql")).fetchone()
    assert database is not None
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET citus.propagate_set_commands = 'local'").format(
            sql.Identifier(database[1])
        )
    )
    return True


def _reference_as_foreign_key(
    conn: psycopg.Connection[Any], table: str, trigger: str, referenced: str, columns: list[str]
) -> None:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    add = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})")
    name = sql.Identifier(f"{table}_{trigger}")
    target = sql.Identifier(referenced)
    conn.execute(add.format(sql.Identifier(table), name, cols, target, cols))
    conn.execute(
        sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger), sql.Identifier(table))
    )


def _foreign_key_order(pending: dict[str, tuple[bool, set[str]]]) -> list[str]:
    """``pending``'s tables, each after the pending tables it references; ``tenant`` before every
    other tenant table (they are co-located with it)."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for table, (has_tenant, references) in sorted(pending.items()):
        first = {TENANT_TABLE} if has_tenant and table != TENANT_TABLE else set()
        sorter.add(table, *sorted((references | first) & pending.keys()))
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise LeoError(f"citus: the foreign keys of {exc.args[1]} form a cycle") from exc
