"""Dispatch fan-out: one delivery per member of a sealed snapshot, deterministic and exactly-once.

**When.** A dispatch fans out once its snapshot is sealed AND every member's pinned profile
version has arrived. Three triggers re-check that, set-based (``dispatch/ready.sql``): the
dispatch command itself (:mod:`leo_activation.consumers.commands`), the seal of its snapshot
(:func:`fan_out_waiting`, called by :mod:`leo_activation.consumers.snapshots`), and the arrival
of a profile version some waiting dispatch's member pinned
(:mod:`leo_activation.consumers.profile_changes`).

**What.** Per member: ``delivery_id = ids.delivery_id(tenant, event, profile)`` and one
``delivery_log`` row — ``queued`` with its destination, or ``suppressed`` with a reason (cancelled
event or paused / completed campaign as of the dispatch command; a join that pinned no profile
version; no destination for the channel; ``no_consent``: the channel's contact policy requires a
consent the pinned version does not grant; ``frequency_cap``: the member already has the cap's
number of deliveries on the channel from dispatches before this one in command order, within the
cap's window of business time) — whose ``log_id`` is
``ids.delivery_fact_id(tenant, delivery, {"fact": status, "dispatch_id": ...})``; and per queued row
one ``DeliveryRequest`` on the delivery-requests topic, keyed ``tenant:delivery``.

**Why it is a pure function of the topics.** Everything a fan-out reads is fixed by then: the
dispatch row captured the event's channel, the event / campaign status and the channel's contact
policy in command order (a tenant's commands are totally ordered), with its place among the
tenant's dispatches (``dispatch_seq``); a capped dispatch waits until the dispatches before it on
its channel and near it in business time have fanned out, so the deliveries it counts are final;
the sealed snapshot is a function of the membership changes up to its watermark; and each
destination and consent comes from the profile version the member's join pinned
(``cdp_profile_version``), never from the current ``cdp_profiles`` row, whose state at fan-out time
depends on how the profile-changes and commands topics happened to interleave. Two
dispatches of the same event to overlapping audiences share delivery ids (one delivery per event
and recipient) but each writes its own rows (the dispatch is in the fact), so no row depends on
which of them fanned out first; connectors dedupe by delivery id.

**Exactly-once.** The requests are :class:`Outgoing` messages, produced by the engine in the same
Kafka transaction as the consumed offsets. The dispatch is marked ``fanned_out`` only after that
transaction committed (an ``AfterCommit``); a dispatch already marked never emits again
(re-dispatch, replay). If the Kafka transaction aborts, the batch is re-applied: the dispatch is
still waiting, the delivery rows dedupe by key, and the same requests are emitted again in the new
transaction. Within one database transaction, ``dispatch_emitted`` stops a second trigger from
emitting a dispatch twice.

**The remaining window.** A crash after the Kafka commit and before the mark leaves the dispatch
``waiting_for_snapshot`` with its rows written and its requests already delivered. The next trigger
for it (a re-dispatch command with the same key, a newly arriving pinned profile version) emits
the same requests again: same keys, same delivery ids, same content; connectors dedupe by
``delivery_id``. Until such a trigger the dispatch's state differs from a clean run's (the state
digest shows it); re-publishing the dispatch command settles it. Likewise, when the engine bisects
a failing batch into several database transactions under one Kafka transaction, a later part
could re-trigger a dispatch an earlier part emitted (only a re-dispatch of it or a conflicting
copy of a pinned version can), emitting duplicates of identical requests. Neither case creates a
different delivery.

**Scale.** Ready-check, member selection and the final insert are single statements; members are
read through a server-side cursor in chunks of :data:`CHUNK`, their ids computed here (uuid5 over
the canonical key, exactly as :mod:`leo_activation.ids` defines them; the database has no SHA-1)
and COPYed back in chunks. No statement runs per member. The requests are not built here: the
fan-out returns a stream (an ``Emit``) that the engine runs inside the Kafka
transaction, reading the committed queued rows back in chunks, so memory stays flat whatever the
audience size; streams are keyed by dispatch, so two triggers of one dispatch produce it once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from leo_activation import db, ids
from leo_activation.engine.handler import AfterCommit, ApplyResult, Connection, Emit, Outgoing
from leo_activation.producers.delivery_requests import delivery_request
from leo_activation.resources import sql_text
from leo_activation.sealing import DESTINATION_FIELD, unseal

CHUNK = 10_000  # members per server-side fetch and per COPY
CHANNELS = frozenset({"email", "sms", "push", "zalo"})
NO_PIN_REASON = "membership change does not pin a profile version"
DELIVERY_COLUMNS = (
    "tenant_id", "log_id", "delivery_id", "event_id", "profile_id", "snapshot_id", "task_id",
    "dispatch_id", "channel", "destination", "delivery_status", "reason", "sent_at",
    "correlation_id", "profile_version", "key_id", "destination_sealed",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReadyDispatch:
    """A dispatch that can fan out now, with everything its fan-out needs (dispatch/ready.sql)."""

    dispatch_id: uuid.UUID
    event_id: uuid.UUID
    campaign_id: uuid.UUID
    snapshot_id: uuid.UUID
    task_id: uuid.UUID
    channel: str
    suppress_reason: str | None
    requested_at: datetime
    correlation_id: str | None
    dispatch_seq: int | None  # NULL for a dispatch recorded before contact policies existed
    consent_required: bool
    cap_max: int | None
    cap_window: timedelta | None


def lock_waits(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> None:
    """Serialise, until this transaction commits, the tenant's transactions that record one half
    of a wait across topics and check the other (``dispatch/lock_waits.sql``): the snapshot
    request and its membership changes, the dispatch and its seal or pinned profile versions.
    Called before the first such write, so it never waits while holding their row locks."""
    conn.execute(sql_text("queries/dispatch/lock_waits.sql"), {"tenant_id": str(tenant_id)})


def delivery_fact(status: str, dispatch_id: uuid.UUID | str) -> dict[str, str]:
    """The fact a fan-out row records (its ``log_id`` is ``ids.delivery_fact_id`` over it)."""
    return {"fact": status, "dispatch_id": str(dispatch_id)}


def fan_out_waiting(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, snapshot_id: uuid.UUID
) -> ApplyResult:
    """Fan out every dispatch that was waiting for ``snapshot_id`` to seal (and is now ready)."""
    rows = conn.execute(
        sql_text("queries/dispatch/waiting_on_snapshot.sql"),
        {"tenant_id": tenant_id, "snapshot_id": snapshot_id},
    ).fetchall()
    if not rows:
        return ApplyResult()
    return fan_out(conn, tenant_id, [r[0] for r in rows])


def fan_out_waiting_on_keys(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    profiles: Sequence[uuid.UUID],
    keys: Sequence[uuid.UUID],
) -> ApplyResult:
    """Fan out every dispatch waiting for one of the data keys ``(profiles[i], keys[i])`` that
    just arrived or were destroyed (and is now ready)."""
    rows = conn.execute(
        sql_text("queries/dispatch/waiting_on_keys.sql"),
        {"tenant_id": tenant_id, "profiles": list(profiles), "keys": list(keys)},
    ).fetchall()
    if not rows:
        return ApplyResult()
    return fan_out(conn, tenant_id, [r[0] for r in rows])


def fan_out(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    dispatch_ids: Sequence[uuid.UUID],
) -> ApplyResult:
    """Fan out those of ``dispatch_ids`` that are ready; the others keep waiting.

    Runs inside the tenant's transaction. Returns the delivery requests to produce and the
    post-commit action that marks the emitted dispatches ``fanned_out``.
    """
    result = ApplyResult()
    candidates = list(dispatch_ids)
    # Rounds: a capped dispatch is ready only once the dispatches before it on its channel
    # fanned out, since their deliveries count against its cap; each round's deliveries are in
    # delivery_log before the next round reads them.
    while candidates:
        conn.execute(sql_text("queries/dispatch/scratch_tables.sql"))
        emitted = conn.execute(sql_text("queries/dispatch/emitted.sql")).fetchone()
        assert emitted is not None
        params = {"tenant_id": tenant_id, "dispatch_ids": candidates, "emitted": emitted[0]}
        ready = [
            ReadyDispatch(*row)
            for row in conn.execute(sql_text("queries/dispatch/ready.sql"), params).fetchall()
        ]
        if not ready:
            break
        conn.execute(
            sql_text("queries/dispatch/emitted_add.sql"),
            {"dispatch_ids": [d.dispatch_id for d in ready]},
        )
        for dispatch in ready:
            stream = _fan_out_one(conn, tenant_id, dispatch)
            result.later[("dispatch", tenant_id, dispatch.dispatch_id)] = Emit(stream)
        conn.execute(sql_text("queries/dispatch/deliveries_insert.sql"))
        fanned_out = tuple(d.dispatch_id for d in ready)
        marker = AfterCommit(_marker(tenant_id, list(fanned_out)))
        result.later[("fanned_out", tenant_id, fanned_out)] = marker
        after = {
            "tenant_id": tenant_id,
            "dispatch_ids": list(fanned_out),
            "emitted": [*emitted[0], *fanned_out],
        }
        candidates = [
            row[0] for row in conn.execute(sql_text("queries/dispatch/capped_after.sql"), after)
        ]
    return result


def _fan_out_one(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, d: ReadyDispatch
) -> Callable[[Connection], Iterator[Outgoing]]:
    """Stage one dispatch's delivery rows, chunk by chunk; return the stream of its requests."""
    params = {
        "tenant_id": tenant_id,
        "snapshot_id": d.snapshot_id,
        "event_id": d.event_id,
        "channel": d.channel,
        "suppress_reason": d.suppress_reason,
        "consent_required": d.consent_required,
        "cap_max": d.cap_max,
        "cap_window": d.cap_window,
        "dispatch_seq": d.dispatch_seq,
        "requested_at": d.requested_at,
    }
    with conn.cursor(name=f"fan_out_{d.dispatch_id.hex}") as members:
        members.execute(sql_text("queries/dispatch/members.sql"), params)
        while chunk := members.fetchmany(CHUNK):
            rows: list[tuple[Any, ...]] = []
            for profile_id, profile_version, destination, sealed, key_id, reason in chunk:
                delivery = ids.delivery_id(tenant_id, d.event_id, profile_id)
                status = "queued" if reason is None else "suppressed"
                log_id = ids.delivery_fact_id(
                    tenant_id, delivery, delivery_fact(status, d.dispatch_id)
                )
                row = (
                    tenant_id, log_id, delivery, d.event_id, profile_id, d.snapshot_id,
                    d.task_id, d.dispatch_id, d.channel, destination, status, reason,
                    d.requested_at, d.correlation_id, profile_version, key_id, sealed,
                )  # fmt: skip
                rows.append(row)
            _copy(conn, rows)
    return functools.partial(_requests, tenant_id, d)


def _requests(tenant_id: uuid.UUID, d: ReadyDispatch, conn: Connection) -> Iterator[Outgoing]:
    """The dispatch's requests, read back from its committed queued rows in chunks (run by the
    engine inside the Kafka transaction, so a million requests never sit in memory at once)."""
    with db.tenant_transaction(conn, tenant_id), conn.cursor(name="fan_out_requests") as cur:
        cur.execute(
            sql_text("queries/dispatch/requests.sql"),
            {"tenant_id": tenant_id, "dispatch_id": d.dispatch_id},
        )
        while chunk := cur.fetchmany(CHUNK):
            for delivery, profile_id, plaintext, sealed, data_key in chunk:
                if sealed is None:
                    destination = plaintext
                elif data_key is None:  # erased since the fan-out: nothing to send to
                    continue
                else:
                    destination = unseal(data_key, DESTINATION_FIELD[d.channel], sealed)
                yield delivery_request(tenant_id, d, delivery, profile_id, destination)


def _copy(conn: psycopg.Connection[Any], rows: Iterable[Sequence[Any]]) -> None:
    copy = sql.SQL("COPY fanout_delivery_log ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, DELIVERY_COLUMNS))
    )
    with conn.cursor() as cur, cur.copy(copy) as writer:
        for row in rows:
            writer.write_row(row)


def _marker(
    tenant_id: uuid.UUID, dispatch_ids: list[uuid.UUID]
) -> Callable[[psycopg.Connection[Any]], None]:
    """The post-commit action marking ``dispatch_ids`` fanned out. The engine runs it in its own
    transaction without a tenant context, so it sets the tenant itself (transaction-local)."""

    def mark(conn: psycopg.Connection[Any]) -> None:
        with db.tenant_transaction(conn, tenant_id):
            conn.execute(
                sql_text("queries/dispatch/mark_fanned_out.sql"),
                {"tenant_id": tenant_id, "dispatch_ids": dispatch_ids},
            )

    return mark
