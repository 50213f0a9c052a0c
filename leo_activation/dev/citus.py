"""Databases on a Citus cluster (a coordinator and its workers), for the local stack, the demo
and the tests.

A database of a Citus cluster exists on every node, with the ``citus`` extension in each, and the
coordinator's copy knows the workers (``citus_add_node``); ``migrate`` then distributes the
tables (:mod:`leo_activation.distribution`). Nodes are reached with the admin DSN's role and
password at the address each is registered under, which on the local stack is 127.0.0.1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from leo_activation import distribution
from leo_activation.db import connect, with_database
from leo_activation.migrate import migrate, schema_checksum
from leo_activation.resources import sql_dir, sql_text


def _dsn_part(dsn: str, key: str) -> str:
    return str(conninfo.conninfo_to_dict(dsn).get(key) or "")


def at_node(dsn: str, host: str, port: int) -> str:
    """``dsn`` (role, password, database) pointed at another node."""
    return conninfo.make_conninfo(dsn, host=host, port=str(port))


def is_citus(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute(sql_text("queries/citus/installed.sql")).fetchone() is not None


def node_dsns(admin_dsn: str) -> list[str]:
    """The admin DSN at every node of the Citus database ``admin_dsn`` names, the coordinator
    first; [] when that database is not a Citus database."""
    with connect(admin_dsn) as conn:
        if not is_citus(conn):
            return []
        nodes = conn.execute(sql_text("queries/citus/nodes.sql")).fetchall()
    return [at_node(admin_dsn, host, port) for host, port in nodes]


def setup_database(coordinator: str, workers: Sequence[str]) -> None:
    """Make the database the DSNs name (present on every node) a Citus database: the extension on
    every node, and the coordinator registered with its workers. Idempotent."""
    for dsn in (coordinator, *workers):
        with connect(dsn) as conn:
            conn.execute(sql_text("queries/citus/create_extension.sql"))
    with connect(coordinator) as conn:
        host, port = _dsn_part(coordinator, "host"), int(_dsn_part(coordinator, "port") or 5432)
        conn.execute(sql_text("queries/citus/set_coordinator.sql"), {"host": host, "port": port})
        for worker in workers:
            address = {"host": _dsn_part(worker, "host"), "port": int(_dsn_part(worker, "port"))}
            conn.execute(sql_text("queries/citus/add_worker.sql"), address)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> list[str]:
    """Create ``name`` on every node of the cluster whose database ``admin_dsn`` names, and make
    it a Citus database (a ``template`` of the same name on every node is copied as it is);
    returns the admin DSN of the new database at each node, the coordinator first."""
    nodes = node_dsns(admin_dsn)
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    for node in nodes:
        with connect(node) as conn:
            conn.execute(statement)
    created = [with_database(node, name) for node in nodes]
    if template is None:
        setup_database(created[0], created[1:])
    return created


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop ``name`` on every node of the cluster whose database ``admin_dsn`` names."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    for node in node_dsns(admin_dsn):
        with connect(node) as conn:
            conn.execute(statement)


def template_name(prefix: str) -> str:
    """``prefix`` and a checksum of the schema and of the distribution code: a template made from
    them is current while neither changed."""
    source = hashlib.sha256(schema_checksum().encode())
    queries = sorted((sql_dir() / "queries" / "citus").glob("*.sql"))
    for path in (*queries, Path(distribution.__file__)):
        source.update(path.read_bytes())
    return f"{prefix}{source.hexdigest()[:12]}"


def template(admin_dsn: str, app_dsn: str, name: str, shard_count: int | None = None) -> str:
    """A migrated and distributed template database ``name`` on every node of the cluster
    ``admin_dsn``'s database belongs to, made once (reused while it exists): cloning a
    distributed database is cloning each node's copy under one name, since the coordinator
    reaches the workers' copies by its own name. A template nobody may connect to is complete
    (connections are shut off last); open, the Citus maintenance daemon would hold it and block
    every clone. ``shard_count``: the tables' shards, instead of the cluster's
    ``citus.shard_count`` (fewer make a copy faster). Returns ``name``."""
    with connect(admin_dsn) as conn:
        row = conn.execute(sql_text("queries/citus/template_state.sql"), {"name": name}).fetchone()
    if row is not None and not row[0]:
        return name
    drop_database(admin_dsn, name)  # a build that did not finish
    nodes = create_database(admin_dsn, name)
    if shard_count is not None:
        with connect(nodes[0]) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET citus.shard_count = {}").format(
                    sql.Identifier(name), sql.Literal(shard_count)
                )
            )
    migrate(nodes[0], with_database(app_dsn, name))
    shut = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
    for node in nodes:
        with connect(with_database(node, "postgres")) as conn:
            conn.execute(shut)
            conn.execute(sql_text("queries/citus/template_disconnect.sql"), {"name": name})
    return name
