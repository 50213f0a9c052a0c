"""Databases on a Citus cluster (a coordinator and its workers), for the local stack, the demo
and the tests.

A database of a Citus cluster exists on every node, with the ``citus`` extension in each, and the
coordinator's copy knows the workers (``citus_add_node``); ``migrate`` then distributes the
tables (:mod:`leo_activation.distribution`). Nodes are reached with the admin DSN's role and
password at the address each is registered under, which on the local stack is 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import conninfo, sql

from leo_activation.db import connect, with_database
from leo_activation.resources import sql_text


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
