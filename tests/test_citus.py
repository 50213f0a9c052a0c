"""What only a Citus cluster shows: every statement the consumers run reaches one shard, a corpus
has the same digest on one server and on Citus, a later migration's tenant table is distributed
without knowing about Citus, and a database that would not pass the tenant context on to the
workers stops the consumer. (The behaviour suite itself runs on both backends: the modules marked
``backends``, tests/fix_backends.py.)"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from leo_activation import db
from leo_activation.contracts import from_json
from leo_activation.dev import citus, corpus
from leo_activation.dev.stack import Endpoints
from leo_activation.errors import LeoError
from leo_activation.migrate import migrate, migrations_path
from leo_activation.ops.digest import state_digest
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_app import deployment_settings, drain, publish_corpus
from tests.fix_db import DbUrls, fresh_database, template_for, tenant_tx
from tests.fix_stack import Stack, app_url

Query = str | bytes | sql.Composable
Recorded = list[tuple[Query, Mapping[str, Any] | None]]
TASK_COUNT = re.compile(r"Task Count: (\d+)")
STATEMENT = re.compile(rb"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def citus_stack(running_stack: Stack, citus_coordinator: str) -> Endpoints:
    return Endpoints(
        running_stack.endpoints.kafka_bootstrap, app_url(citus_coordinator), citus_coordinator
    )


@pytest.fixture
def citus_db(citus_stack: Endpoints) -> Iterator[DbUrls]:
    with fresh_database(citus_stack, template_for(citus_stack)) as urls:
        yield urls


def _recording(recorded: Recorded) -> Any:
    """``db.connect`` whose connections note every statement their cursors execute."""
    connect = db.connect

    class Cursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            recorded.append((query, params))
            return super().execute(query, params, **kwargs)

    class ServerCursor(psycopg.ServerCursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            recorded.append((query, params))
            return super().execute(query, params, **kwargs)

    def recording_connect(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        conn = connect(*args, **kwargs)
        conn.cursor_factory = Cursor
        conn.server_cursor_factory = ServerCursor
        return conn

    return recording_connect


def _text(conn: psycopg.Connection[Any], query: Query) -> bytes:
    if isinstance(query, sql.Composable):
        return query.as_bytes(conn)
    return query.encode() if isinstance(query, str) else query


def _without_comments(text: bytes) -> bytes:
    return re.sub(rb"--[^\n]*", b"", text)


def test_every_statement_of_the_consumers_reaches_one_shard(
    citus_stack: Endpoints,
    citus_db: DbUrls,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Profiles (sealed) and their data keys, memberships, snapshots sealed and tagged,
    dispatches fanned out and marked, receipts, tenant lifecycle, contact policies and an
    erasure: EXPLAIN every statement the engine ran, in its tenant's context, and find each
    Citus scan in it running one task. (An INSERT ... SELECT
    from a staging table is pulled to the coordinator and lands by its rows' tenant_id, all one
    tenant's: its plan holds no Citus scan, and so no task count, of its own.)"""
    settings = deployment_settings(citus_stack, citus_db, topic_prefix)
    c = corpus.build(
        21, n_tenants=2, n_profiles=6, n_segments=2, n_receipts=20,
        with_activation=True, with_contact_policy=True,
    )  # fmt: skip
    publish_corpus(settings, c)
    tenant = uuid.UUID(corpus.tenants(21, 2)[0])
    erased = next(
        m["profile_id"]
        for m in c.topics["profile-changes"]
        if m["type"] == "profile_upsert" and uuid.UUID(str(m["tenant_id"])) == tenant
    )
    publish(settings, "profile-changes", [from_json("profile-changes", {
        "type": "profile_erase", "tenant_id": str(tenant), "profile_id": str(erased),
        "request_ref": "DSR-1", "occurred_at": "2026-02-01T09:00:00Z"})])  # fmt: skip
    recorded: Recorded = []
    monkeypatch.setattr(db, "connect", _recording(recorded))
    stats = drain(settings)
    monkeypatch.undo()
    assert sum(s.dead_lettered for s in stats) == 0
    fanned_out: set[bytes] = set()
    checked = 0
    with db.connect(citus_db.app_url, autocommit=False) as conn:
        for query, params in recorded:
            text = _text(conn, query)
            if not STATEMENT.match(_without_comments(text)):
                continue  # SET LOCAL, COPY, CREATE TEMP TABLE, TRUNCATE of a staging table
            with tenant_tx(conn, (params or {}).get("tenant_id", tenant)):
                # the staging and scratch tables the statement may read, empty
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS dispatch_emitted (dispatch_id uuid) "
                    "ON COMMIT DROP"
                )
                for table in ("delivery_log", "cdp_profiles", "segment_membership_change"):
                    conn.execute(
                        sql.SQL(
                            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DROP"
                        ).format(sql.Identifier(f"stage_{table}"), sql.Identifier(table))
                    )
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS fanout_delivery_log (LIKE delivery_log) "
                    "ON COMMIT DROP"
                )
                # the parameters bound as literals (a client-side cursor): Citus plans the SELECT
                # of an INSERT ... SELECT pulled to the coordinator without an EXPLAIN's bound
                # parameters and refuses to (keys/insert.sql runs; its EXPLAIN would not)
                explain = psycopg.ClientCursor(conn).execute(b"EXPLAIN (COSTS OFF) " + text, params)
                plan = "\n".join(str(r[0]) for r in explain)
            tasks = [int(n) for n in TASK_COUNT.findall(plan)]
            if any(n != 1 for n in tasks):
                fanned_out.add(text)
            checked += 1
    assert checked > 40, checked  # the corpus reached every kind of statement
    assert not fanned_out, b"\n\n".join(sorted(fanned_out)).decode()


def test_a_corpus_has_the_same_digest_on_one_server_and_on_citus(
    running_stack: Stack, citus_stack: Endpoints, topic_prefix: str
) -> None:
    """The same topics consumed into one server and into Citus, where one tenant has been
    isolated on shards of its own (how a large tenant is moved off its neighbours' shards)."""
    single_stack = running_stack.endpoints
    c = corpus.build(
        22, n_tenants=3, n_profiles=8, n_segments=2, n_receipts=30,
        with_activation=True, with_contact_policy=True,
    )  # fmt: skip
    with (
        fresh_database(single_stack, template_for(single_stack)) as single_db,
        fresh_database(citus_stack, template_for(citus_stack)) as citus_db,
    ):
        single = deployment_settings(single_stack, single_db, topic_prefix)
        distributed = deployment_settings(citus_stack, citus_db, topic_prefix)
        with psycopg.connect(citus_db.admin_url, autocommit=True) as owner:
            owner.execute(
                "SELECT isolate_tenant_to_new_shard('tenant', %s::uuid, 'CASCADE', "
                "shard_transfer_mode => 'block_writes')",
                (corpus.tenants(22, 3)[0],),
            )
        publish_corpus(single, c)
        drain(single)
        drain(distributed)
        digest, tables = state_digest(single)
        assert state_digest(distributed) == (digest, tables)
        assert len(tables) == 3


def test_a_later_migrations_tenant_table_is_distributed_without_knowing_about_citus(
    citus_db: DbUrls, tmp_path: Path
) -> None:
    """A migration written for one server (a tenant table referencing tenant, isolated, with a
    trigger) applied to a distributed database: migrate distributes it, co-located, with its
    policy and trigger on every shard."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_path(), copy)
    (copy / "9999_tenant_notes.sql").write_text(
        """
CREATE TABLE IF NOT EXISTS tenant_note (
    tenant_id uuid NOT NULL REFERENCES tenant (tenant_id),
    note_id uuid NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (tenant_id, note_id)
);
SELECT leo_isolate_tenant('tenant_note');
SELECT leo_make_append_only('tenant_note');
""",
        encoding="utf-8",
    )
    lines: list[str] = []
    assert migrate(citus_db.admin_url, citus_db.app_url, migrations_dir=copy, report=lines.append)
    assert len(lines) == 1, lines
    assert "distributed 1 tables" in lines[0]
    assert "tenant_note" in lines[0]
    a, b = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(citus_db.admin_url, autocommit=True) as owner:
        colocated = owner.execute(
            "SELECT count(DISTINCT colocation_id) FROM citus_tables "
            "WHERE table_name IN ('tenant'::regclass, 'tenant_note'::regclass)"
        ).fetchone()
        assert colocated == (1,)
        for t in (a, b):
            owner.execute(
                "INSERT INTO tenant VALUES (%s, 'n', 'active', now(), now())", (t,)
            )  # the owner is a superuser: no policy applies to it
    with psycopg.connect(citus_db.app_url) as conn:
        with tenant_tx(conn, a):
            conn.execute("INSERT INTO tenant_note VALUES (%s, %s, 'mine')", (a, uuid.uuid4()))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_tx(conn, a):
            conn.execute("INSERT INTO tenant_note VALUES (%s, %s, 'theirs')", (b, uuid.uuid4()))
        with tenant_tx(conn, b):
            assert conn.execute("SELECT count(*) FROM tenant_note").fetchone() == (0,)
    with (
        psycopg.connect(citus_db.admin_url) as owner,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
    ):
        owner.execute("DELETE FROM tenant_note")


def test_a_database_that_would_not_pass_the_tenant_on_stops_the_consumer(
    citus_stack: Endpoints, citus_db: DbUrls, topic_prefix: str
) -> None:
    """Without citus.propagate_set_commands = 'local' the workers never see the tenant: the
    consumer refuses to start, in one line naming the cure, rather than read nothing."""
    with psycopg.connect(citus_db.admin_url, autocommit=True) as owner:
        owner.execute(
            sql.SQL("ALTER DATABASE {} RESET citus.propagate_set_commands").format(
                sql.Identifier(citus_db.name)
            )
        )
    settings: Settings = deployment_settings(citus_stack, citus_db, topic_prefix)
    with pytest.raises(LeoError, match=r"propagate_set_commands.*run `leo-activation migrate`"):
        drain(settings)
    migrate(citus_db.admin_url, citus_db.app_url)  # sets it again
    drain(settings)


def test_a_database_run_on_one_server_is_distributed_once_it_has_citus(
    citus_stack: Endpoints,
) -> None:
    """The way out of one server: a database migrated and filled without Citus gets the
    extension and its workers, and the next migrate gives its policies the distributable form,
    distributes every table with its rows, and the application reads them back."""
    admin = citus_stack.admin_database_url
    name = f"leo_t_{uuid.uuid4().hex[:12]}"
    nodes = [db.with_database(node, name) for node in citus.node_dsns(admin)]
    app = db.with_database(citus_stack.database_url, name)
    tenant = uuid.uuid4()
    try:
        for node in citus.node_dsns(admin):
            with db.connect(node) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        migrate(nodes[0], app)
        with db.connect(app) as conn, tenant_tx(conn, tenant):
            conn.execute(
                "INSERT INTO tenant VALUES (%s, 'early', 'active', now(), now())", (tenant,)
            )
        citus.setup_database(nodes[0], nodes[1:])
        lines: list[str] = []
        migrate(nodes[0], app, report=lines.append)
        assert any("tenant policies in the form Citus distributes" in line for line in lines)
        with db.connect(nodes[0]) as conn:  # every table with a tenant_id (partitions go along)
            (tenant_tables,) = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
                "AND NOT c.relispartition AND a.attname = 'tenant_id'"
            ).fetchone() or (0,)
        assert any(f"distributed {tenant_tables} tables" in line for line in lines), lines
        with db.connect(nodes[0]) as conn:  # the coordinator keeps no copy of the rows
            assert conn.execute("SELECT pg_relation_size('tenant')").fetchone() == (0,)
        with db.connect(app) as conn, tenant_tx(conn, tenant):
            assert conn.execute("SELECT tenant_name FROM tenant").fetchall() == [("early",)]
    finally:
        citus.drop_database(admin, name)
