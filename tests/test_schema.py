"""The schema's promises (tenant isolation for every table and view, the application role's
limits, append-only history, migrations), checked against a real PostgreSQL.

Everything runs as the application role unless a test says otherwise. The table lists come from
the catalog, so a table added later without tenant isolation, or without seed rows here, fails.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg
import pytest
from psycopg import errors, sql

from leo_activation.db import (
    connect,
    is_transient,
    set_tenant_context,
    tenant_transaction,
    with_database,
)
from leo_activation.dev.stack import Endpoints
from leo_activation.errors import LeoError
from leo_activation.migrate import (
    MIGRATE_LOCK_KEY,
    app_role_name,
    discover,
    migrate,
    migrations_path,
)
from tests.fix_db import FIXED_TIME, DbUrls, drop_database, make_tenant, tenant_tx

APPEND_ONLY = (
    "delivery_log",
    "segment_snapshot",
    "segment_snapshot_member",
    "agent_task",
    "agent_task_status",
    "cdp_profile_version",
    "tenant_lifecycle",
    "contact_policy",
    "profile_erasure",
    "profile_erased_key",
)
# Work queues (empty at rest) and the data keys (an erasure destroys them): the only tables the
# application may DELETE from.
WORK_QUEUES = ("segment_snapshot_tag_pending",)
# tables whose reference to tenant is checked per statement, not by a foreign key
PROFILE_TABLES = ("cdp_profiles", "cdp_profile_version", "segment_membership_change")
DELETABLE = (*WORK_QUEUES, "profile_key")
NS = uuid.UUID("5d1f0c1e-7a0b-4c4e-9a55-1e0a0f5e0000")
Row = dict[str, Any]


# ------------------------------------------------------------------------------------ helpers
def catalog_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str | None]]:
    """Every table (plain and partitioned) in schema public, with its parent if a partition."""
    rows = conn.execute(
        """
        SELECT c.relname, p.relname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
        LEFT JOIN pg_class p ON p.oid = i.inhparent
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
        ORDER BY c.relname
        """
    ).fetchall()
    return [(str(name), None if parent is None else str(parent)) for name, parent in rows]


def world(tenant: uuid.UUID, salt: str = "") -> list[tuple[str, Row]]:
    """One row in every table for ``tenant``, in foreign-key order (ids derived from the salt)."""

    def uid(kind: str) -> uuid.UUID:
        return uuid.uuid5(tenant, f"{salt}{kind}")

    t0 = FIXED_TIME
    profile, campaign, event = uid("profile"), uid("campaign"), uid("event")
    snapshot, task, dispatch = uid("snapshot"), uid("task"), uid("dispatch")
    embedding = "[" + ",".join(["0.5"] * 384) + "]"
    return [
        (
            "tenant",
            {
                "tenant_id": tenant,
                "tenant_name": f"tenant {tenant}",
                "status": "active",
                "created_at": t0,
                "updated_at": t0,
            },
        ),
        (
            "tenant_lifecycle",
            {
                "tenant_id": tenant,
                "seq": uid("seq").int % 1_000_000 + 1,
                "status": "active",
                "occurred_at": t0,
                "source_timestamp_ms": 0,
            },
        ),
        (
            "cdp_profiles",
            {
                "tenant_id": tenant,
                "profile_id": profile,
                "ext_id": f"crm-{salt}1",
                "email": f"Someone{salt}@Example.com",
                "mobile_number": "+84900000001",
                "segments": ["vip"],
                "data_labels": ["gdpr"],
                "segment_snapshots": [snapshot],
                "raw_attributes": '{"city": "Hanoi"}',
                "cdp_version": 1,
                "content_hash": b"\x01\x02",
                "updated_at": t0,
            },
        ),
        (
            "cdp_profile_version",
            {
                "tenant_id": tenant,
                "profile_id": profile,
                "version": 1,
                "content_hash": bytes(32),
                "email": f"Someone{salt}@Example.com",
                "occurred_at": t0,
            },
        ),
        (
            "profile_key",
            {
                "tenant_id": tenant,
                "profile_id": profile,
                "key_id": uid("key"),
                "data_key": bytes(64),
                "created_at": t0,
                "source_timestamp_ms": 0,
            },
        ),
        (
            "profile_erasure",
            {
                "tenant_id": tenant,
                "profile_id": profile,
                "request_ref": f"DSR{salt}",
                "erased_at": t0,
            },
        ),
        (
            "profile_erased_key",
            {
                "tenant_id": tenant,
                "profile_id": profile,
                "key_id": uid("erased-key"),
                "request_ref": f"DSR{salt}",
            },
        ),
        (
            "segment_membership_change",
            {
                "tenant_id": tenant,
                "segment_key": f"vip{salt}",
                "sequence": 1,
                "profile_id": profile,
                "action": "join",
                "occurred_at": t0,
            },
        ),
        (
            "campaign",
            {
                "tenant_id": tenant,
                "campaign_id": campaign,
                "campaign_code": f"C{salt}1",
                "campaign_name": "Tet 2025",
                "objective": "re-engage",
                "status": "active",
                "start_at": t0,
                "end_at": t0 + timedelta(days=7),
                "created_at": t0,
                "updated_at": t0,
            },
        ),
        (
            "campaign_status_history",
            {"tenant_id": tenant, "campaign_id": campaign, "changed_at": t0, "status": "active"},
        ),
        (
            "marketing_event",
            {
                "tenant_id": tenant,
                "event_id": event,
                "campaign_id": campaign,
                "event_key": f"blast{salt}",
                "event_name": "Tet blast",
                "event_type": "email",
                "event_channel": "email",
                "embedding": embedding,
                "status": "planned",
                "created_at": t0,
                "updated_at": t0,
            },
        ),
        (
            "marketing_event_status_history",
            {"tenant_id": tenant, "event_id": event, "changed_at": t0, "status": "planned"},
        ),
        (
            "segment_snapshot_request",
            {
                "tenant_id": tenant,
                "snapshot_id": snapshot,
                "segment_key": "vip",
                "as_of_sequence": 1,
                "requested_at": t0,
                "state": "sealed",
            },
        ),
        (
            "segment_snapshot",
            {
                "tenant_id": tenant,
                "snapshot_id": snapshot,
                "segment_name": "vip",
                "segment_version": "1",
                "as_of_sequence": 1,
                "member_count": 1,
                "member_digest": "00",
                "created_at": t0,
            },
        ),
        (
            "segment_snapshot_member",
            {"tenant_id": tenant, "snapshot_id": snapshot, "profile_id": profile, "created_at": t0},
        ),
        (
            "segment_snapshot_tag_pending",
            {"tenant_id": tenant, "snapshot_id": snapshot, "segment_key": "vip"},
        ),
        (
            "agent_task",
            {
                "tenant_id": tenant,
                "task_id": task,
                "task_key": f"plan{salt}",
                "agent_name": "planner",
                "task_type": "plan",
                "campaign_id": campaign,
                "event_id": event,
                "snapshot_id": snapshot,
                "reasoning_summary": "VIPs first",
                "reasoning_trace": '{"steps": []}',
                "status": "pending",
                "created_at": t0,
            },
        ),
        (
            "agent_task_status",
            {"tenant_id": tenant, "task_id": task, "changed_at": t0, "status": "completed"},
        ),
        (
            "contact_policy",
            {
                "tenant_id": tenant,
                "policy_id": uid("policy"),
                "seq": 1,
                "channel": "email",
                "consent_required": True,
                "cap_max": 3,
                "cap_window": timedelta(days=7),
                "occurred_at": t0,
            },
        ),
        (
            "dispatch",
            {
                "tenant_id": tenant,
                "dispatch_id": dispatch,
                "dispatch_key": f"d{salt}",
                "event_id": event,
                "snapshot_id": snapshot,
                "task_id": task,
                "requested_at": t0,
            },
        ),
        (
            "delivery_log",
            {
                "tenant_id": tenant,
                "log_id": uid("log"),
                "delivery_id": uid("delivery"),
                "event_id": event,
                "profile_id": profile,
                "snapshot_id": snapshot,
                "task_id": task,
                "dispatch_id": dispatch,
                "channel": "email",
                "destination": "someone@example.com",
                "delivery_status": "sent",
                "provider_response": "{}",
                "sent_at": t0,
            },
        ),
    ]


def insert(conn: psycopg.Connection[Any], table: str, row: Row) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        ),
        list(row.values()),
    )


def seed_world(app_url: str, tenant: uuid.UUID) -> None:
    """Insert the tenant's world as the application role, in the tenant's own context."""
    with connect(app_url) as conn, tenant_transaction(conn, tenant):
        for table, row in world(tenant):
            insert(conn, table, row)


def unchanged(conn: psycopg.Connection[Any], table: str) -> sql.Composed:
    """``SET c = c`` for the table's first column but tenant_id: an UPDATE that changes nothing
    (Citus refuses any UPDATE of the distribution column, even to itself)."""
    row = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attname <> 'tenant_id' ORDER BY attnum LIMIT 1",
        (table,),
    ).fetchone()
    assert row is not None
    return sql.SQL("{0} = {0}").format(sql.Identifier(row[0]))


def shard_of(table: str) -> str:
    """A pattern for ``table`` as an error names it: on Citus, a shard of it (``<table>_<id>``)."""
    return rf"\b{table}(_\d+)?\b"


def values(rows: int, columns: int) -> sql.Composed:
    """A multi-row VALUES list of placeholders (an INSERT of its rows Citus routes by row; an
    INSERT ... SELECT it would run through the coordinator)."""
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * columns))
    return sql.SQL("VALUES {}").format(sql.SQL(", ").join([row] * rows))


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def tenants_landing_in(admin: psycopg.Connection[Any], partition: str, n: int) -> list[uuid.UUID]:
    """``n`` tenant ids whose rows the partition's bound routes to ``partition``."""
    constraint = admin.execute(
        "SELECT pg_get_partition_constraintdef(%s::regclass)", (partition,)
    ).fetchone()
    assert constraint is not None
    assert constraint[0], f"{partition} has no partition constraint"
    probe = sql.SQL("SELECT coalesce(({}), false) FROM (SELECT %s::uuid AS tenant_id) AS t").format(
        sql.SQL(cast(LiteralString, constraint[0]))
    )
    found: list[uuid.UUID] = []
    for i in range(1000):
        candidate = uuid.uuid5(NS, f"tenant-{i}")
        ok = admin.execute(probe, (candidate,)).fetchone()
        if ok is not None and ok[0]:
            found.append(candidate)
            if len(found) == n:
                return found
    raise AssertionError(f"no tenant ids route to {partition}: is it partitioned by tenant_id?")


@dataclass(frozen=True)
class Seeded:
    db: DbUrls
    pairs: dict[str, tuple[uuid.UUID, uuid.UUID]]  # table -> (tenant A, tenant B) with a row each


@pytest.fixture
def seeded(db: DbUrls) -> Seeded:
    """Two tenants per table with one row each in it (and in every other table)."""
    with connect(db.admin_url, autocommit=True) as admin:
        tables = catalog_tables(admin)
        pairs: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}
        default = (uuid.uuid5(NS, "tenant-a"), uuid.uuid5(NS, "tenant-b"))
        for table, parent in tables:
            if parent is None:
                pairs[table] = default
            else:
                a, b = tenants_landing_in(admin, table, 2)
                pairs[table] = (a, b)
    for tenant in sorted({t for pair in pairs.values() for t in pair}):
        seed_world(db.app_url, tenant)
    return Seeded(db, pairs)


def has_privilege(conn: psycopg.Connection[Any], table: str, privilege: str) -> bool:
    row = conn.execute(
        "SELECT has_table_privilege(current_user, %s::regclass, %s)", (table, privilege)
    ).fetchone()
    return bool(row and row[0])


def row_for(table: str, parent: str | None, tenant: uuid.UUID, salt: str) -> Row:
    rows = dict(world(tenant, salt))
    key = parent if parent is not None else table
    assert key in rows, f"no seed row for table {key}: add one to world() in {__file__}"
    return rows[key]


# ------------------------------------------------------------------------------------ catalog
# The policy's form follows the database (0013): (USING, WITH CHECK). One server: the tenant an
# InitPlan (evaluated once per statement, not once per row). Citus, which refuses a subquery in a
# policy: the function (statements name the tenant too, which makes it a one-time check) and a
# text comparison for WITH CHECK (cheap for every row written).
INITPLAN = "(tenant_id = ( SELECT leo_current_tenant() AS leo_current_tenant))"
TENANT_POLICY = {
    "single": (INITPLAN, INITPLAN),
    "citus": (
        "(tenant_id = leo_current_tenant())",
        "((tenant_id)::text = lower(current_setting('app.current_tenant_id'::text, true)))",
    ),
}


@pytest.mark.backends
def test_every_public_table_is_tenant_isolated(db: DbUrls, backend: str) -> None:
    tenant_predicate, tenant_check = TENANT_POLICY[backend]
    with connect(db.admin_url, autocommit=True) as conn:
        tables = conn.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT format_type(a.atttypid, a.atttypmod)
                           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                    FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            ORDER BY c.relname
            """
        ).fetchall()
        policies = conn.execute(
            """
            SELECT c.relname, p.polname, p.polpermissive, p.polcmd,
                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
                   0 = ANY (p.polroles) OR 'leo_application'::regrole = ANY (p.polroles)
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public'
            """
        ).fetchall()
    assert len(tables) >= 14, tables
    problems: list[str] = []
    isolated: set[str] = set()
    for table, name, permissive, cmd, using, check, for_app in policies:
        if not permissive:
            continue  # restrictive policies can only narrow what the permissive ones allow
        if cmd in "*rwd" and using != tenant_predicate:
            problems.append(f"{table}: permissive policy {name} USING {using}")
        # an ALL/UPDATE policy without WITH CHECK reuses its USING; an INSERT one must say it
        if cmd in "*aw" and check != tenant_check:
            problems.append(f"{table}: permissive policy {name} WITH CHECK {check}")
        if cmd == "*" and using == tenant_predicate and check == tenant_check and for_app:
            isolated.add(table)
    for table, rls, forced, tenant_col in tables:
        if tenant_col != "uuid not null":
            problems.append(f"{table}: tenant_id is {tenant_col!r}, expected 'uuid not null'")
        if not (rls and forced):
            problems.append(f"{table}: row level security enabled={rls} forced={forced}")
        if table not in isolated:
            problems.append(
                f"{table}: no policy FOR ALL USING {tenant_predicate} WITH CHECK {tenant_check}"
            )
    assert not problems, "\n".join(problems)


@pytest.mark.backends
def test_application_role_owns_nothing_and_bypasses_nothing(db: DbUrls) -> None:
    role = app_role_name(db.app_url)
    with connect(db.app_url) as conn:
        me = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert me == (role, False, False, False, False)
        # not a member (directly or not) of any role that is superuser or bypasses RLS
        elevated = conn.execute(
            "SELECT rolname FROM pg_roles WHERE (rolsuper OR rolbypassrls) "
            "AND pg_has_role(current_user, oid, 'MEMBER')"
        ).fetchall()
        assert elevated == []
        owned = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE pg_has_role(current_user, r.oid, 'MEMBER')"
        ).fetchall()
        assert owned == []
        assert conn.execute("SELECT pg_has_role('leo_application', 'MEMBER')").fetchone() == (True,)
        # the migration bookkeeping is out of sight
        assert conn.execute("SELECT has_schema_privilege('leo_meta', 'USAGE')").fetchone() == (
            False,
        )
        # TEMP tables (the bulk-load path stages rows in them)
        conn.execute("CREATE TEMP TABLE staging (x int) ON COMMIT DROP")
        # and no DDL in public
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.sneaky (tenant_id uuid)")
        conn.rollback()


def test_extensions_and_embedding_index(db: DbUrls) -> None:
    with connect(db.app_url) as conn:
        extensions = {
            str(r[0])
            for r in conn.execute(
                "SELECT extname FROM pg_extension WHERE extname IN ('vector', 'citext')"
            )
        }
        assert extensions == {"vector", "citext"}
        index = conn.execute(
            """
            SELECT am.amname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_am am ON am.oid = ic.relam
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = 'marketing_event'::regclass AND a.attname = 'embedding'
            """
        ).fetchall()
        assert [am for am, _ in index] == ["hnsw"], index
        assert "vector_cosine_ops" in index[0][1]
        dim = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'marketing_event'::regclass AND attname = 'embedding'"
        ).fetchone()
        assert dim == ("vector(384)",)


# ------------------------------------------------------------------------------------ RLS matrix
@pytest.mark.backends
def test_rls_matrix_every_table(seeded: Seeded, subtests: pytest.Subtests, backend: str) -> None:
    db = seeded.db
    with connect(db.admin_url, autocommit=True) as admin:
        tables = catalog_tables(admin)
    assert {t for t, _ in tables} == set(seeded.pairs)
    for table, parent in tables:
        with subtests.test(table=table):
            check_isolation(db, table, parent, *seeded.pairs[table], backend=backend)


def check_isolation(
    db: DbUrls, table: str, parent: str | None, a: uuid.UUID, b: uuid.UUID, *, backend: str
) -> None:
    with connect(db.app_url) as conn:
        if parent is not None:
            # A partition is reached through its parent only; to prove its own policy holds
            # should anyone grant it directly, grant it here (this database is thrown away).
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert not has_privilege(conn, table, privilege), (table, privilege)
            conn.rollback()
            with connect(db.admin_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO leo_application").format(
                        sql.Identifier(table)
                    )
                )

        # unset (a brand-new session) -> 0 rows
        assert count(conn, table) == 0
        conn.rollback()
        for setting in (
            "",
            "not-a-uuid",
            f"{{{a}}}",
            f" {a}",
            "00000000-0000-0000-0000-000000000000",
            "'; SELECT 1; --",
        ):
            with tenant_tx(conn, setting):
                assert count(conn, table) == 0, f"setting {setting!r} showed rows"
        # set to A -> exactly A's row, in upper case too
        for setting in (str(a), str(a).upper()):
            with tenant_tx(conn, setting):
                seen = conn.execute(
                    sql.SQL("SELECT tenant_id FROM {}").format(sql.Identifier(table))
                ).fetchall()
                assert seen == [(a,)], (setting, seen)

        # INSERT of a B row while set to A -> refused by WITH CHECK
        intruder = row_for(table, parent, b, salt="intruder-")
        with pytest.raises(errors.InsufficientPrivilege) as refused, tenant_tx(conn, a):
            insert(conn, table, intruder)
        assert refused.value.sqlstate == "42501"
        assert "row-level security" in str(refused.value), str(refused.value)

        can_update = has_privilege(conn, table, "UPDATE")
        same = unchanged(conn, table)
        conn.rollback()
        ident = sql.Identifier(table)
        if can_update:
            with tenant_tx(conn, a):
                cur = conn.execute(
                    sql.SQL("UPDATE {} SET {} WHERE tenant_id = %s").format(ident, same), (b,)
                )
                assert cur.rowcount == 0
                cur = conn.execute(sql.SQL("UPDATE {} SET {}").format(ident, same))
                assert cur.rowcount == 1  # A's row only
            # moving A's row to B is refused: by WITH CHECK, or on Citus before it (a row never
            # changes its distribution column)
            refusal = (
                pytest.raises(errors.InsufficientPrivilege, match="row-level security")
                if backend == "single"
                else pytest.raises(errors.FeatureNotSupported, match="partition value")
            )
            with refusal, tenant_tx(conn, a):
                conn.execute(sql.SQL("UPDATE {} SET tenant_id = %s").format(ident), (b,))
        else:
            with (
                pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
                tenant_tx(conn, a),
            ):
                conn.execute(
                    sql.SQL("UPDATE {} SET {} WHERE tenant_id = %s").format(ident, same), (b,)
                )
        can_delete = has_privilege(conn, table, "DELETE")
        conn.rollback()
        if can_delete:
            # granted on the work queues only, and it reaches the current tenant's rows only
            assert table in DELETABLE, f"{table}: the application may DELETE from it"
            with conn.transaction(force_rollback=True):
                set_tenant_context(conn, str(a))
                cur = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(ident), (b,)
                )
                assert cur.rowcount == 0
                assert conn.execute(sql.SQL("DELETE FROM {}").format(ident)).rowcount == 1
        else:
            # DELETE is never granted to the application but on work queues and keys
            assert table not in DELETABLE, f"{table}: a table the application cannot empty"
            with (
                pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
                tenant_tx(conn, a),
            ):
                conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(ident), (b,))

    # nothing above changed B's row
    with connect(db.admin_url) as admin:
        rows = admin.execute(
            sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(ident)
        ).fetchall()
        assert dict(rows).get(b) == 1, rows
        assert dict(rows).get(a) == 1, rows


@pytest.mark.backends
def test_every_view_runs_as_the_caller_and_is_isolated(seeded: Seeded) -> None:
    """A view runs as its owner unless security_invoker: with a superuser owner, RLS would not
    apply and every tenant would see every row. A materialized view has no RLS at all."""
    db = seeded.db
    with connect(db.admin_url, autocommit=True) as admin:
        relations = admin.execute(
            """
            SELECT c.relname, c.relkind,
                   coalesce('security_invoker=true' = ANY (c.reloptions), false),
                   has_table_privilege('leo_application', c.oid, 'SELECT')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
              -- an extension's own views (Citus puts citus_tables there) are not the schema's
              AND NOT EXISTS (SELECT FROM pg_depend d
                              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                AND d.deptype = 'e')
            ORDER BY c.relname
            """
        ).fetchall()
    problems = [
        f"{name}: materialized view readable by the application (no RLS on those)"
        for name, kind, _, readable in relations
        if kind == "m" and readable
    ] + [
        f"{name}: view without security_invoker = true"
        for name, kind, invoker, _ in relations
        if kind == "v" and not invoker
    ]
    assert not problems, "\n".join(problems)
    a, b = seeded.pairs["delivery_log"]
    with connect(db.app_url) as conn:
        for name, kind, _, readable in relations:
            if kind != "v" or not readable:
                continue
            ident = sql.Identifier(name)
            assert count(conn, name) == 0, f"{name} shows rows with no tenant set"
            with tenant_tx(conn, "not-a-uuid"):
                assert count(conn, name) == 0, f"{name} shows rows for a malformed tenant"
            with tenant_tx(conn, a):
                tenants = conn.execute(
                    sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(ident)
                ).fetchall()
                # exactly A: B's rows (seeded alike) stay hidden, and the check is not vacuous
                assert tenants == [(a,)], f"{name} shows {tenants} to tenant {a} (B is {b})"
            conn.rollback()


@pytest.mark.backends
def test_pooled_connection_forgets_the_tenant(seeded: Seeded) -> None:
    a, _ = seeded.pairs["delivery_log"]
    # a pooled session in implicit-transaction mode, the way a pooler's clients often run
    with connect(seeded.db.app_url, autocommit=False) as conn:
        conn.execute(sql.SQL("SET LOCAL app.current_tenant_id = {}").format(sql.Literal(str(a))))
        assert count(conn, "delivery_log") == 1
        conn.commit()
        assert count(conn, "delivery_log") == 0
        assert conn.execute("SELECT current_setting('app.current_tenant_id', true)").fetchone() == (
            "",
        )
        conn.commit()

        with tenant_transaction(conn, a):
            assert count(conn, "delivery_log") == 1
        assert count(conn, "delivery_log") == 0
        conn.rollback()

        # an error inside the block rolls back and forgets the tenant too
        with pytest.raises(errors.DivisionByZero), tenant_transaction(conn, a):
            conn.execute("SELECT 1 / 0")
        assert count(conn, "delivery_log") == 0


@pytest.mark.backends
def test_tenant_transaction_nested_restores_previous_tenant(seeded: Seeded) -> None:
    a, b = seeded.pairs["tenant"]
    with connect(seeded.db.app_url) as conn, tenant_transaction(conn, a):
        with tenant_transaction(conn, b):
            assert conn.execute("SELECT tenant_id FROM tenant").fetchall() == [(b,)]
        assert conn.execute("SELECT tenant_id FROM tenant").fetchall() == [(a,)]
    with (
        pytest.raises(ValueError, match="badly formed"),
        connect(seeded.db.app_url) as conn,
        tenant_transaction(conn, "not-a-uuid"),
    ):
        pass


# ------------------------------------------------------------------------------------ append-only
@pytest.mark.backends
@pytest.mark.parametrize("table", APPEND_ONLY)
def test_append_only_refuses_rewrites(seeded: Seeded, table: str) -> None:
    a, _ = seeded.pairs[table]
    ident = sql.Identifier(table)
    with connect(seeded.db.admin_url) as owner:
        same = unchanged(owner, table)
    statements = {
        "UPDATE": sql.SQL("UPDATE {} SET {}").format(ident, same),
        "DELETE": sql.SQL("DELETE FROM {}").format(ident),
        "TRUNCATE": sql.SQL("TRUNCATE {} CASCADE").format(ident),
    }
    with connect(seeded.db.app_url) as conn:
        for statement in statements.values():
            with (
                pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
                tenant_tx(conn, a),
            ):
                conn.execute(statement)
    with connect(seeded.db.admin_url) as owner:
        row = owner.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (True,)  # the owner/superuser: no privilege check can stop it
        for op, statement in statements.items():
            with pytest.raises(errors.InsufficientPrivilege, match="append-only") as refused:
                owner.execute(statement)
            assert re.search(
                f"table {shard_of(table)} is append-only: {op} refused", str(refused.value)
            )
            owner.rollback()
        assert count(owner, table) == len({t for pair in seeded.pairs.values() for t in pair})


@pytest.mark.backends
def test_snapshot_member_needs_its_snapshot(seeded: Seeded) -> None:
    """segment_snapshot_member -> segment_snapshot is checked per statement (0006), as strictly as
    the foreign key it replaced: a member of a snapshot that does not exist, or of another
    tenant's, is refused with the foreign-key SQLSTATE, alone or among valid rows."""
    a, b = seeded.pairs["segment_snapshot_member"]
    own, theirs = uuid.uuid5(a, "snapshot"), uuid.uuid5(b, "snapshot")
    ghost = uuid.uuid5(NS, "no such snapshot")
    profiles = [uuid.uuid5(NS, f"member {i}") for i in range(3)]

    def insert_members(conn: psycopg.Connection[Any], snapshots: list[uuid.UUID]) -> int:
        rows = [(a, s, p, FIXED_TIME) for s in snapshots for p in profiles]
        statement = sql.SQL(
            "INSERT INTO segment_snapshot_member "
            "(tenant_id, snapshot_id, profile_id, created_at) {}"
        ).format(values(len(rows), 4))
        return conn.execute(statement, [v for row in rows for v in row]).rowcount

    with connect(seeded.db.app_url) as conn:
        for snapshots in ([ghost], [theirs], [own, ghost]):
            with (
                pytest.raises(errors.ForeignKeyViolation, match="segment_snapshot") as refused,
                tenant_tx(conn, a),
            ):
                insert_members(conn, snapshots)
            assert refused.value.sqlstate == "23503"
            # the table named (Citus does not pass the worker's error fields on, only its text)
            assert re.search(
                f'on table "{shard_of("segment_snapshot_member")}"', str(refused.value)
            )
        with tenant_tx(conn, a):  # the snapshot exists: accepted, every row in one statement
            assert insert_members(conn, [own]) == len(profiles)
            assert count(conn, "segment_snapshot_member") == 1 + len(profiles)
    with (
        connect(seeded.db.admin_url) as owner,
        pytest.raises(errors.ForeignKeyViolation, match=str(ghost)),
    ):  # the owner (superuser, no RLS) is held to it too
        insert_members(owner, [ghost])


@pytest.mark.backends
def test_delivery_log_needs_its_tenant_and_a_tenant_is_never_deleted(seeded: Seeded) -> None:
    """delivery_log -> tenant is checked per statement (0007): a row of a tenant that does not
    exist is refused with the foreign-key SQLSTATE, alone or among valid rows, for the owner
    too; and since nothing else keeps a tenant's rows from being orphaned, a tenant can be
    disabled but never deleted or truncated."""
    a, _ = seeded.pairs["delivery_log"]
    ghost = uuid.uuid5(NS, "no such tenant")

    def insert_rows(conn: psycopg.Connection[Any], tenants: list[uuid.UUID]) -> int:
        rows = [(t, uuid.uuid4(), uuid.uuid4(), "sent", FIXED_TIME) for t in tenants]
        statement = sql.SQL(
            "INSERT INTO delivery_log (tenant_id, log_id, delivery_id, delivery_status, sent_at) {}"
        ).format(values(len(rows), 5))
        return conn.execute(statement, [v for row in rows for v in row]).rowcount

    with connect(seeded.db.app_url) as conn:
        with (
            pytest.raises(errors.ForeignKeyViolation, match="tenant") as refused,
            tenant_tx(conn, ghost),  # RLS lets the current tenant write; it must also exist
        ):
            insert_rows(conn, [ghost])
        assert refused.value.sqlstate == "23503"
        assert re.search(f'on table "{shard_of("delivery_log")}"', str(refused.value))
        with tenant_tx(conn, a):
            assert insert_rows(conn, [a, a]) == 2
    with connect(seeded.db.admin_url) as owner:
        with pytest.raises(errors.ForeignKeyViolation, match=str(ghost)):
            insert_rows(owner, [a, ghost])
        owner.rollback()
        for statement in ("DELETE FROM tenant WHERE tenant_id = %s", "TRUNCATE tenant CASCADE"):
            with pytest.raises(errors.InsufficientPrivilege, match="never deleted"):
                owner.execute(statement, (a,) if "%s" in statement else None)
            owner.rollback()
        owner.execute("UPDATE tenant SET status = 'disabled' WHERE tenant_id = %s", (a,))
        assert owner.execute("SELECT status FROM tenant WHERE tenant_id = %s", (a,)).fetchone()
        owner.rollback()


@pytest.mark.backends
@pytest.mark.parametrize("table", PROFILE_TABLES)
def test_profile_tables_need_their_tenant(seeded: Seeded, table: str, backend: str) -> None:
    """The profile tables' references to tenant are checked per statement (0015), as strictly as
    the foreign keys they replaced: a row of a tenant that does not exist is refused with the
    foreign-key SQLSTATE, for the application and the owner alike, and no row moves to another
    tenant."""
    a, _ = seeded.pairs[table]
    ghost = uuid.uuid5(NS, "no such tenant")
    with connect(seeded.db.app_url) as conn:
        with (
            pytest.raises(errors.ForeignKeyViolation, match="tenant") as refused,
            tenant_tx(conn, ghost),  # RLS lets the current tenant write; it must also exist
        ):
            insert(conn, table, dict(world(ghost))[table])
        assert refused.value.sqlstate == "23503"
        with tenant_tx(conn, a):  # the same row of a tenant that exists is taken
            insert(conn, table, dict(world(a, salt="again"))[table])
    with connect(seeded.db.admin_url) as owner:
        with pytest.raises(errors.ForeignKeyViolation, match=str(ghost)):
            insert(owner, table, dict(world(ghost))[table])
        owner.rollback()
        if table == "cdp_profile_version":
            return  # append-only: no UPDATE at all (test_append_only_refuses_rewrites)
        move = sql.SQL("UPDATE {} SET tenant_id = %s WHERE tenant_id = %s")
        # Citus refuses any change of the distribution column before a trigger could
        expected = errors.ForeignKeyViolation if backend == "single" else psycopg.Error
        with pytest.raises(expected, match="another tenant" if backend == "single" else None):
            owner.execute(move.format(sql.Identifier(table)), (ghost, a))
        owner.rollback()
        still = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s")
        assert owner.execute(still.format(sql.Identifier(table)), (a,)).fetchone() == (2,)


@pytest.mark.backends
def test_segment_snapshots_cannot_shrink(seeded: Seeded) -> None:
    a, _ = seeded.pairs["cdp_profiles"]
    extra = uuid.uuid5(NS, "another snapshot")
    with connect(seeded.db.app_url) as conn:
        with tenant_tx(conn, a):  # growing (and reordering) is fine
            cur = conn.execute(
                "UPDATE cdp_profiles SET segment_snapshots = %s || segment_snapshots", ([extra],)
            )
            assert cur.rowcount == 1
        # (not the slices segment_snapshots[1:1]: Citus 14.0.1's coordinator crashes on an array
        # slice in an UPDATE's SET of a distributed table)
        for shrunk in (
            "'{}'",
            "array_remove(segment_snapshots, segment_snapshots[1])",
            "array_remove(segment_snapshots, segment_snapshots[2])",
        ):
            with (
                pytest.raises(errors.InsufficientPrivilege, match="only grows"),
                tenant_tx(conn, a),
            ):
                conn.execute(
                    sql.SQL("UPDATE cdp_profiles SET segment_snapshots = {}").format(
                        sql.SQL(shrunk)
                    )
                )
        with tenant_tx(conn, a):
            row = conn.execute("SELECT cardinality(segment_snapshots) FROM cdp_profiles")
            assert row.fetchone() == (2,)
    with (
        connect(seeded.db.admin_url) as owner,
        pytest.raises(errors.InsufficientPrivilege, match="only grows"),
    ):
        owner.execute("UPDATE cdp_profiles SET segment_snapshots = '{}'")


# ------------------------------------------------------------------------------------ migrate
@pytest.mark.backends
def test_migrate_again_applies_nothing(db: DbUrls) -> None:
    assert migrate(db.admin_url, db.app_url) == []
    with connect(db.admin_url) as conn:
        rows = conn.execute(
            "SELECT name FROM leo_meta.leo_schema_migrations ORDER BY name"
        ).fetchall()
    assert [r[0] for r in rows] == [m.name for m in discover()]


def test_migrate_waits_for_a_held_lock_then_gives_up_in_one_line(
    db: DbUrls, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(db.admin_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        holder_pid = holder.info.backend_pid
        started = time.monotonic()
        with pytest.raises(LeoError) as refused:
            migrate(db.admin_url, db.app_url, lock_timeout_s=1.5)
        waited = time.monotonic() - started
    message = str(refused.value)
    assert "migration lock" in message
    assert str(holder_pid) in message
    assert "\n" not in message
    assert 1.5 <= waited < 30
    assert any("waiting up to 2s" in r.getMessage() for r in caplog.records)
    # released: the next run goes through
    assert migrate(db.admin_url, db.app_url, lock_timeout_s=1.5) == []


def test_migrate_refuses_a_changed_migration(db: DbUrls) -> None:
    first = discover()[0]
    with connect(db.admin_url) as conn:
        conn.execute(
            "UPDATE leo_meta.leo_schema_migrations SET checksum = %s WHERE name = %s",
            ("0" * 64, first.name),
        )
        conn.commit()
    with pytest.raises(LeoError) as refused:
        migrate(db.admin_url, db.app_url)
    message = str(refused.value)
    assert first.name in message
    assert "0" * 64 in message
    assert first.checksum in message
    assert "\n" not in message


def test_migrate_refuses_an_edited_file_and_applies_a_new_one(db: DbUrls, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_path(), copy)
    last = sorted(copy.glob("*.sql"))[-1]
    number = int(last.name[:4]) + 1
    added = copy / f"{number:04d}_probe.sql"
    added.write_text(
        "CREATE TABLE probe (tenant_id uuid NOT NULL, x int);\n"
        "SELECT leo_isolate_tenant('probe');\n"
        "GRANT SELECT ON probe TO leo_application;\n",
        encoding="utf-8",
    )
    assert migrate(db.admin_url, db.app_url, migrations_dir=copy) == [added.name]
    assert migrate(db.admin_url, db.app_url, migrations_dir=copy) == []

    original = last.read_text(encoding="utf-8")
    last.write_text(original + "\n-- an innocent comment\n", encoding="utf-8")
    with pytest.raises(LeoError, match=f"migration {last.name} changed after it was applied"):
        migrate(db.admin_url, db.app_url, migrations_dir=copy)
    last.write_text(original, encoding="utf-8")

    added.unlink()
    with pytest.raises(LeoError, match=f"{added.name} is recorded as applied but its file"):
        migrate(db.admin_url, db.app_url, migrations_dir=copy)


def test_a_failing_migration_leaves_nothing_behind(db: DbUrls, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_path(), copy)
    number = int(sorted(copy.glob("*.sql"))[-1].name[:4]) + 1
    broken = copy / f"{number:04d}_broken.sql"
    broken.write_text(
        "CREATE TABLE half_done (tenant_id uuid NOT NULL);\nSELECT 1 / 0;\n", encoding="utf-8"
    )
    with pytest.raises(LeoError, match=f"migration {broken.name} failed.*division by zero"):
        migrate(db.admin_url, db.app_url, migrations_dir=copy)
    with connect(db.admin_url) as conn:
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone() == (None,)
        recorded = conn.execute(
            "SELECT count(*) FROM leo_meta.leo_schema_migrations WHERE name = %s", (broken.name,)
        ).fetchone()
        assert recorded == (0,)


@pytest.fixture
def empty_database(stack: Endpoints) -> Iterator[DbUrls]:
    name = f"leo_t_{uuid.uuid4().hex[:12]}"
    admin_url = stack.admin_database_url
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield DbUrls(with_database(admin_url, name), with_database(stack.database_url, name), name)
    finally:
        drop_database(admin_url, name)


def test_concurrent_migrations_apply_each_once(empty_database: DbUrls) -> None:
    db = empty_database
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(migrate(db.admin_url, db.app_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    names = [m.name for m in discover()]
    assert sorted(results, key=len) == [[], names]
    with connect(db.admin_url) as conn:
        recorded = conn.execute(
            "SELECT name, count(*) FROM leo_meta.leo_schema_migrations GROUP BY name ORDER BY name"
        ).fetchall()
    assert recorded == [(n, 1) for n in names]
    make_tenant(db.app_url, uuid.uuid5(NS, "after concurrent migrate"), "works")


def test_migrate_locks_down_the_application_role(db: DbUrls) -> None:
    role = app_role_name(db.app_url)
    with connect(db.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} BYPASSRLS CREATEDB").format(sql.Identifier(role)))
        admin.execute("ALTER ROLE leo_application BYPASSRLS")
        try:
            assert migrate(db.admin_url, db.app_url) == []
        finally:
            flags = admin.execute(
                "SELECT rolname, rolsuper, rolbypassrls, rolcreatedb, rolcanlogin FROM pg_roles "
                "WHERE rolname IN (%s, 'leo_application') ORDER BY rolname = %s",
                (role, role),
            ).fetchall()
            admin.execute("ALTER ROLE leo_application NOBYPASSRLS")
            admin.execute(
                sql.SQL("ALTER ROLE {} NOBYPASSRLS NOCREATEDB").format(sql.Identifier(role))
            )
    assert flags == [
        ("leo_application", False, False, False, False),
        (role, False, False, False, True),
    ]
    with connect(db.app_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    if psycopg.conninfo.conninfo_to_dict(db.app_url).get("password"):
        # the DSN's password is stored as a SCRAM verifier computed client-side
        with connect(db.admin_url) as admin:
            stored = admin.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
        assert stored is not None
        assert str(stored[0]).startswith("SCRAM-SHA-256$"), "password not stored as SCRAM"


def test_migrate_refuses_the_owner_as_application_role(db: DbUrls) -> None:
    with connect(db.admin_url) as admin:
        row = admin.execute("SELECT current_user").fetchone()
    assert row is not None
    owner = str(row[0])
    owner_as_app = psycopg.conninfo.make_conninfo(db.app_url, user=owner)
    with pytest.raises(LeoError, match=f"application role {owner} is the migrating"):
        migrate(db.admin_url, owner_as_app)


def test_cli_migrate(db: DbUrls, capsys: pytest.CaptureFixture[str]) -> None:
    from leo_activation.cli import main

    argv = ["--admin-database-url", db.admin_url, "--database-url", db.app_url, "migrate"]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"schema up to date: {len(discover())} migrations\n"
    with connect(db.admin_url) as conn:
        conn.execute("UPDATE leo_meta.leo_schema_migrations SET checksum = repeat('a', 64)")
        conn.commit()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("leo-activation: migration 0001_")
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------------ db helpers
def test_is_transient_sorts_real_errors(db: DbUrls) -> None:
    tenant = make_tenant(db.app_url, uuid.uuid5(NS, "transient"), "t")
    with connect(db.app_url) as conn:
        with pytest.raises(errors.UniqueViolation) as dup, tenant_transaction(conn, tenant):
            conn.execute(
                "INSERT INTO tenant VALUES (%s, 'again', 'active', now(), now())", (tenant,)
            )
        assert not is_transient(dup.value)
        with pytest.raises(errors.CheckViolation) as bad, tenant_transaction(conn, tenant):
            conn.execute("UPDATE tenant SET status = 'zombie'")
        assert not is_transient(bad.value)
        with pytest.raises(errors.ProgramLimitExceeded) as big, tenant_transaction(conn, tenant):
            conn.execute("SELECT repeat('xx', 1073741823)")
        assert not is_transient(big.value)
        wrapped = RuntimeError("while applying")
        wrapped.__cause__ = big.value
        assert not is_transient(wrapped)

        pid = conn.info.backend_pid
        with connect(db.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError) as lost:
            conn.execute("SELECT 1")
        assert is_transient(lost.value), repr(lost.value)
        with pytest.raises(psycopg.OperationalError) as closed:
            conn.execute("SELECT 1")
        assert is_transient(closed.value), repr(closed.value)
        wrapped = RuntimeError("while applying")
        wrapped.__cause__ = closed.value
        assert is_transient(wrapped)
    assert not is_transient(ValueError("x"))


def test_is_transient_deadlock(db: DbUrls) -> None:
    tenant = make_tenant(db.app_url, uuid.uuid5(NS, "deadlock"), "d")
    other = make_tenant(db.app_url, uuid.uuid5(NS, "deadlock-2"), "d2")
    first = connect(db.admin_url, autocommit=False)
    second = connect(db.admin_url, autocommit=False)
    caught: list[BaseException] = []
    try:
        first.execute("UPDATE tenant SET tenant_name = 'x' WHERE tenant_id = %s", (tenant,))
        second.execute("UPDATE tenant SET tenant_name = 'y' WHERE tenant_id = %s", (other,))

        def cross() -> None:
            try:
                first.execute("UPDATE tenant SET tenant_name = 'x2' WHERE tenant_id = %s", (other,))
            except psycopg.Error as exc:
                caught.append(exc)

        thread = threading.Thread(target=cross)
        thread.start()
        try:
            second.execute("SET deadlock_timeout = '50ms'")
            second.execute("UPDATE tenant SET tenant_name = 'y2' WHERE tenant_id = %s", (tenant,))
        except psycopg.Error as exc:
            caught.append(exc)
        second.rollback()
        thread.join(timeout=30)
    finally:
        first.close()
        second.close()
    deadlocks = [e for e in caught if isinstance(e, errors.DeadlockDetected)]
    assert deadlocks, caught
    assert all(is_transient(e) for e in deadlocks)
