"""Activation commands -> tenants, campaigns, events, snapshot requests, agent tasks, dispatches.

Commands are keyed by tenant, so a tenant's commands arrive in the order they were issued; they are
applied one by one in that order, each in its own savepoint, so a command that references something
unknown is dead-lettered without undoing its neighbours.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from leo_activation import db, ids, snapshots
from leo_activation.errors import PoisonMessage
from leo_activation.handling import ApplyContext, ApplyResult, Envelope, tenant_status
from leo_activation.resources import sql_text

Command = Callable[[psycopg.Connection[Any], Envelope, ApplyContext], ApplyResult]
TENANT_LIFECYCLE = frozenset(
    {"tenant_register", "tenant_rename", "tenant_disable", "tenant_enable"}
)


def _changed(n: int) -> ApplyResult:
    return ApplyResult(applied=1) if n else ApplyResult(duplicates=1)


def tenant_register(conn: psycopg.Connection[Any], e: Envelope, ctx: ApplyContext) -> ApplyResult:
    params = {"tenant_name": e.record["tenant_name"], "occurred_at": e.record["occurred_at"]}
    return _changed(conn.execute(sql_text("queries/tenant_register.sql"), params).rowcount)


def _tenant_update(
    conn: psycopg.Connection[Any], e: Envelope, name: str | None, status: str | None
) -> ApplyResult:
    if tenant_status(conn) is None:
        raise PoisonMessage("unknown_tenant", f"tenant {e.tenant_id} is not registered")
    params = {"tenant_name": name, "status": status, "occurred_at": e.record["occurred_at"]}
    return _changed(conn.execute(sql_text("queries/tenant_update.sql"), params).rowcount)


def tenant_rename(conn: psycopg.Connection[Any], e: Envelope, ctx: ApplyContext) -> ApplyResult:
    return _tenant_update(conn, e, e.record["tenant_name"], None)


def tenant_disable(conn: psycopg.Connection[Any], e: Envelope, ctx: ApplyContext) -> ApplyResult:
    return _tenant_update(conn, e, None, "disabled")


def tenant_enable(conn: psycopg.Connection[Any], e: Envelope, ctx: ApplyContext) -> ApplyResult:
    return _tenant_update(conn, e, None, "active")


def snapshot_request(conn: psycopg.Connection[Any], e: Envelope, ctx: ApplyContext) -> ApplyResult:
    r = e.record
    snapshot = ids.snapshot_id(e.tenant_id, r["segment_key"], r["as_of_sequence"])
    params = {**r, "snapshot_id": snapshot}
    result = _changed(
        conn.execute(sql_text("queries/snapshot_request_insert.sql"), params).rowcount
    )
    result.merge(snapshots.seal_ready(conn, e.tenant_id, [r["segment_key"]], ctx))
    return result


COMMANDS: dict[str, Command] = {
    "tenant_register": tenant_register,
    "tenant_rename": tenant_rename,
    "tenant_disable": tenant_disable,
    "tenant_enable": tenant_enable,
    "snapshot_request": snapshot_request,
}


class CommandsHandler:
    topic = "commands"
    requires_active_tenant = False  # tenant lifecycle commands come before the tenant exists

    def apply(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
        ctx: ApplyContext,
    ) -> ApplyResult:
        result = ApplyResult()
        for e in sorted(batch, key=lambda e: (e.partition, e.offset)):
            try:
                with conn.transaction():  # a savepoint: a poison command undoes only itself
                    if e.kind not in TENANT_LIFECYCLE:
                        status = tenant_status(conn)
                        if status != "active":
                            raise PoisonMessage(
                                "unknown_tenant" if status is None else "disabled_tenant",
                                f"tenant {tenant_id} is {status or 'not registered'}",
                            )
                    result.merge(COMMANDS[e.kind](conn, e, ctx))
            except PoisonMessage as poison:
                result.rejected.append((e, poison))
            except psycopg.Error as exc:
                if db.is_transient(exc):
                    raise
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                result.rejected.append((e, PoisonMessage("db_rejected", reason)))
        return result
