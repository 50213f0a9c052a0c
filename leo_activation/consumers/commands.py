"""Activation commands -> tenants, campaigns, events, snapshot requests, agent tasks, dispatches.

Commands are keyed by tenant, so a tenant's commands arrive in the order they were issued; they are
applied one by one in that order, each in its own savepoint, so a command that references something
unknown is dead-lettered without undoing its neighbours.

Every id is derived from the tenant and the command's natural key (:mod:`leo_activation.ids`), so
a reference is resolved by deriving the id and looking it up in the tenant's own rows: row-level
security makes another tenant's objects invisible, and naming one is naming an unknown reference
(``unknown_reference``). Definitions (campaign, event) are upserts where only a newer definition
wins; statuses are insert-only histories from which the current status is recomputed (latest
wins); agent tasks and their status changes are append-only (a different record under a known key
is a ``conflict``). A dispatch is recorded with what its fan-out needs from this topic and fans out
once its snapshot is sealed (see :mod:`leo_activation.consumers.dispatch`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from leo_activation import db, ids
from leo_activation.consumers import dispatch, snapshots, tenancy
from leo_activation.engine.handler import ApplyResult, Envelope, Gate
from leo_activation.errors import PoisonMessage, first_line
from leo_activation.resources import sql_text

Command = Callable[[psycopg.Connection[Any], Envelope], ApplyResult]
TENANT_LIFECYCLE = frozenset(
    {"tenant_register", "tenant_rename", "tenant_disable", "tenant_enable"}
)


def _changed(n: int) -> ApplyResult:
    return ApplyResult(applied=1) if n else ApplyResult(duplicates=1)


def tenant_register(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    params = {
        "tenant_id": e.tenant_id,
        "tenant_name": e.record["tenant_name"],
        "occurred_at": e.record["occurred_at"],
    }
    registered = conn.execute(sql_text("queries/tenancy/register.sql"), params).rowcount
    if registered:
        tenancy.record(conn, e, "active")
    return _changed(registered)


def _tenant_update(
    conn: psycopg.Connection[Any], e: Envelope, name: str | None, status: str | None
) -> ApplyResult:
    previous = tenancy.current_status(conn, e.tenant_id)
    if previous is None:
        raise PoisonMessage("unknown_tenant", f"tenant {e.tenant_id} is not registered")
    params = {
        "tenant_id": e.tenant_id,
        "tenant_name": name,
        "status": status,
        "occurred_at": e.record["occurred_at"],
    }
    changed = conn.execute(sql_text("queries/tenancy/update.sql"), params).rowcount
    if changed and status is not None and status != previous:
        tenancy.record(conn, e, status, previous)
    return _changed(changed)


def tenant_rename(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    return _tenant_update(conn, e, e.record["tenant_name"], None)


def tenant_disable(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    return _tenant_update(conn, e, None, "disabled")


def tenant_enable(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    return _tenant_update(conn, e, None, "active")


def snapshot_request(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    snapshot = ids.snapshot_id(e.tenant_id, r["segment_key"], r["as_of_sequence"])
    params = {**r, "tenant_id": e.tenant_id, "snapshot_id": snapshot}
    result = _changed(
        conn.execute(sql_text("queries/snapshots/request_insert.sql"), params).rowcount
    )
    result.merge(snapshots.seal_ready(conn, e.tenant_id, [r["segment_key"]]))
    return result


# ---------------------------------------------------------------------------- references
def _check_period(kind: str, r: Mapping[str, Any]) -> None:
    if r.get("start_at") and r.get("end_at") and r["end_at"] < r["start_at"]:
        raise PoisonMessage("invalid", f"{kind}: end_at {r['end_at']} is before start_at")


def _references(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    *,
    campaign_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    snapshot_id: uuid.UUID | None = None,
    task_id: uuid.UUID | None = None,
) -> tuple[Any, ...]:
    """(campaign status, event status, snapshot request state, task exists, task's event id,
    task's snapshot id) in the current tenant; None for what was not asked or not found."""
    params = {
        "tenant_id": tenant_id,
        "campaign_id": campaign_id,
        "event_id": event_id,
        "snapshot_id": snapshot_id,
        "task_id": task_id,
    }
    row = conn.execute(sql_text("queries/commands/references.sql"), params).fetchone()
    assert row is not None
    return tuple(row)


def _require(what: str, missing: list[str]) -> None:
    if missing:
        raise PoisonMessage("unknown_reference", f"{what} names unknown {', '.join(missing)}")


def _snapshot_ref(tenant_id: uuid.UUID, r: Mapping[str, Any]) -> tuple[str, uuid.UUID] | None:
    """(label, snapshot id) of a command's segment_key + as_of_sequence reference, if any."""
    segment, as_of = r.get("segment_key"), r.get("as_of_sequence")
    if segment is None and as_of is None:
        return None
    if segment is None or as_of is None:
        raise PoisonMessage("invalid", "segment_key and as_of_sequence go together")
    return f"snapshot request {segment}@{as_of}", ids.snapshot_id(tenant_id, segment, as_of)


# ---------------------------------------------------------------------------- campaigns, events
def campaign_define(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    _check_period(f"campaign {r['campaign_code']}", r)
    params = {
        **r,
        "tenant_id": e.tenant_id,
        "campaign_id": ids.campaign_id(e.tenant_id, r["campaign_code"]),
    }
    return _define(conn, "campaign", params)


def campaign_status_change(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    campaign = ids.campaign_id(e.tenant_id, r["campaign_code"])
    if _references(conn, e.tenant_id, campaign_id=campaign)[0] is None:
        _require("campaign status change", [f"campaign {r['campaign_code']}"])
    params = {**r, "tenant_id": e.tenant_id, "campaign_id": campaign}
    return _changed(_status(conn, "campaign", params))


def _define(conn: psycopg.Connection[Any], what: str, params: Mapping[str, Any]) -> ApplyResult:
    """Upsert a campaign or event definition (only a newer one wins) and record its status."""
    if not conn.execute(sql_text(f"queries/commands/{what}_upsert.sql"), params).rowcount:
        return ApplyResult(duplicates=1)  # not newer: a no-op, the status it states included
    _status(conn, what, params)
    return ApplyResult(applied=1)


def _status(conn: psycopg.Connection[Any], what: str, params: Mapping[str, Any]) -> int:
    """Record a campaign's or event's status change; recompute its current status if new."""
    recorded = conn.execute(sql_text(f"queries/commands/{what}_status_record.sql"), params).rowcount
    if recorded:
        conn.execute(sql_text(f"queries/commands/{what}_status_refresh.sql"), params)
    return recorded


def _embedding_text(embedding: list[float] | None) -> str | None:
    """pgvector's text form; the floats are finite and 384 of them (contracts.validate)."""
    return None if embedding is None else ids.canonical_json([float(x) for x in embedding])


def event_define(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    code, key = r["campaign_code"], r["event_key"]
    _check_period(f"event {code}/{key}", r)
    campaign = ids.campaign_id(e.tenant_id, code)
    if _references(conn, e.tenant_id, campaign_id=campaign)[0] is None:
        _require(f"event {code}/{key}", [f"campaign {code}"])
    params = {
        **r,
        "tenant_id": e.tenant_id,
        "campaign_id": campaign,
        "event_id": ids.event_id(e.tenant_id, code, key),
        "embedding": _embedding_text(r.get("embedding")),
    }
    return _define(conn, "event", params)


def event_status_change(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    code, key = r["campaign_code"], r["event_key"]
    event = ids.event_id(e.tenant_id, code, key)
    if _references(conn, e.tenant_id, event_id=event)[1] is None:
        _require("event status change", [f"event {code}/{key}"])
    return _changed(_status(conn, "event", {**r, "tenant_id": e.tenant_id, "event_id": event}))


# ---------------------------------------------------------------------------- agent tasks
def agent_task_record(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    code, event_key = r.get("campaign_code"), r.get("event_key")
    if event_key is not None and code is None:
        raise PoisonMessage("invalid", "event_key needs the campaign_code it belongs to")
    campaign = None if code is None else ids.campaign_id(e.tenant_id, code)
    event = None if event_key is None else ids.event_id(e.tenant_id, str(code), event_key)
    snapshot_ref = _snapshot_ref(e.tenant_id, r)
    snapshot = None if snapshot_ref is None else snapshot_ref[1]
    found = _references(
        conn, e.tenant_id, campaign_id=campaign, event_id=event, snapshot_id=snapshot
    )
    missing = [
        label
        for label, wanted, got in (
            (f"campaign {code}", campaign, found[0]),
            (f"event {code}/{event_key}", event, found[1]),
            (snapshot_ref[0] if snapshot_ref else "", snapshot, found[2]),
        )
        if wanted is not None and got is None
    ]
    _require(f"agent task {r['task_key']}", missing)
    params = {
        **r,
        "tenant_id": e.tenant_id,
        "task_id": ids.task_id(e.tenant_id, r["task_key"]),
        "campaign_id": campaign,
        "event_id": event,
        "snapshot_id": snapshot,
        "correlation_id": e.correlation_id,
    }
    if conn.execute(sql_text("queries/commands/agent_task_insert.sql"), params).rowcount:
        return ApplyResult(applied=1)
    _same_or_conflict(
        conn, "queries/commands/agent_task_same.sql", params, f"agent task {r['task_key']}"
    )
    return ApplyResult(duplicates=1)


def agent_task_status_change(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    task = ids.task_id(e.tenant_id, r["task_key"])
    if not _references(conn, e.tenant_id, task_id=task)[3]:
        _require("agent task status change", [f"agent task {r['task_key']}"])
    params = {**r, "tenant_id": e.tenant_id, "task_id": task, "correlation_id": e.correlation_id}
    if conn.execute(sql_text("queries/commands/agent_task_status_insert.sql"), params).rowcount:
        return ApplyResult(applied=1)
    what = f"agent task {r['task_key']} status {r['status']} at {r['occurred_at']}"
    _same_or_conflict(conn, "queries/commands/agent_task_status_same.sql", params, what)
    return ApplyResult(duplicates=1)


def _same_or_conflict(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any], what: str
) -> None:
    """An append-only record's key was taken: a copy is a duplicate, anything else a conflict."""
    row = conn.execute(sql_text(query), params).fetchone()
    if row is None or not row[0]:
        raise PoisonMessage(
            "conflict", f"{what} is already recorded with different content (append-only)"
        )


# ---------------------------------------------------------------------------- contact policy
def contact_policy_set(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    cap_max, window = r["frequency_cap_max"], r["frequency_cap_window_s"]
    if r["channel"] not in dispatch.CHANNELS:
        raise PoisonMessage("bad_policy", f"unknown channel {r['channel'][:40]!r}")
    if (cap_max is None) != (window is None):
        raise PoisonMessage(
            "bad_policy", "frequency_cap_max and frequency_cap_window_s go together"
        )
    if cap_max is not None and (cap_max < 1 or window < 1):
        raise PoisonMessage("bad_policy", "a frequency cap needs a max and a window of at least 1")
    params = {
        **r,
        "tenant_id": e.tenant_id,
        "policy_id": ids.derive("contact_policy", e.tenant_id, r),
        "correlation_id": e.correlation_id,
    }
    return _changed(conn.execute(sql_text("queries/policy/insert.sql"), params).rowcount)


# ---------------------------------------------------------------------------- dispatch
def dispatch_request(conn: psycopg.Connection[Any], e: Envelope) -> ApplyResult:
    r = e.record
    code, event_key, task_key = r["campaign_code"], r["event_key"], r["task_key"]
    snapshot_ref = _snapshot_ref(e.tenant_id, r)
    assert snapshot_ref is not None  # both fields are required by the DispatchRequest schema
    snapshot_label, snapshot = snapshot_ref
    event = ids.event_id(e.tenant_id, code, event_key)
    task = ids.task_id(e.tenant_id, task_key)
    _, event_status, snapshot_state, task_exists, task_event, task_snapshot = _references(
        conn, e.tenant_id, event_id=event, snapshot_id=snapshot, task_id=task
    )
    what = f"dispatch {r['dispatch_key']}"
    missing = [
        label
        for label, found in (
            (f"event {code}/{event_key}", event_status is not None),
            (snapshot_label, snapshot_state is not None),
            (f"agent task {task_key}", task_exists),
        )
        if not found
    ]
    _require(what, missing)
    # The deciding task, if it names an event or snapshot, must have decided this one.
    if (task_event is not None and task_event != event) or (
        task_snapshot is not None and task_snapshot != snapshot
    ):
        raise PoisonMessage(
            "conflict", f"{what}: agent task {task_key} decided on another event or snapshot"
        )
    dispatch_id = ids.dispatch_id(e.tenant_id, r["dispatch_key"])
    params = {
        **r,
        "tenant_id": e.tenant_id,
        "dispatch_id": dispatch_id,
        "event_id": event,
        "snapshot_id": snapshot,
        "task_id": task,
        "correlation_id": e.correlation_id,
    }
    inserted = conn.execute(sql_text("queries/dispatch/insert.sql"), params).rowcount
    if not inserted:
        _same_or_conflict(conn, "queries/dispatch/same.sql", params, what)
    # A re-dispatch of a dispatch still waiting re-checks it too: that is how a fan-out whose
    # post-commit mark was lost in a crash is emitted again (same delivery ids).
    result = ApplyResult(applied=1) if inserted else ApplyResult(duplicates=1)
    result.merge(dispatch.fan_out(conn, e.tenant_id, [dispatch_id]))
    return result


COMMANDS: dict[str, Command] = {
    "tenant_register": tenant_register,
    "tenant_rename": tenant_rename,
    "tenant_disable": tenant_disable,
    "tenant_enable": tenant_enable,
    "snapshot_request": snapshot_request,
    "campaign_define": campaign_define,
    "campaign_status_change": campaign_status_change,
    "event_define": event_define,
    "event_status_change": event_status_change,
    "agent_task_record": agent_task_record,
    "agent_task_status_change": agent_task_status_change,
    "dispatch_request": dispatch_request,
    "contact_policy_set": contact_policy_set,
}


# commands that wait for the profile-changes topic (a snapshot for its membership changes, a
# dispatch for its snapshot's seal and its members' pinned profile versions)
WAITS_ACROSS_TOPICS = frozenset({"snapshot_request", "dispatch_request"})


class CommandsHandler:
    topic = "commands"
    gate: Gate | None = None  # tenant lifecycle commands come before the tenant exists

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> None:
        return None  # commands are few and each applied on its own

    def apply(
        self, conn: psycopg.Connection[Any], tenant_id: uuid.UUID, batch: list[Envelope]
    ) -> ApplyResult:
        result = ApplyResult()
        if any(e.kind in WAITS_ACROSS_TOPICS for e in batch):
            dispatch.lock_waits(conn, tenant_id)
        for e in sorted(batch, key=lambda e: (e.partition, e.offset)):
            try:
                with conn.transaction():  # a savepoint: a poison command undoes only itself
                    if e.kind not in TENANT_LIFECYCLE:
                        # at its publish time, like other topics: a redelivered copy of a command
                        # published before a disable is judged as the original was
                        refused = tenancy.refusal(e, tenancy.history(conn, tenant_id))
                        if refused is not None:
                            raise refused
                    result.merge(COMMANDS[e.kind](conn, e))
            except PoisonMessage as poison:
                result.rejected.append((e, poison))
            except psycopg.Error as exc:
                if db.classify(exc) is not db.Fault.DATA:
                    raise
                result.rejected.append((e, PoisonMessage("db_rejected", first_line(exc))))
        return result
