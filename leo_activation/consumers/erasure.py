"""A data subject's erasure (``profile_erase`` on the profile-changes topic): crypto-shredding.

The profile's personal fields are stored and carried sealed under its data keys
(:mod:`leo_activation.sealing`), so erasing it is destroying those keys, here and in the
compacted profile-keys topic; the append-only history (versions, deliveries, snapshots) keeps its
pseudonymous ids and times and loses nothing else. In the erasure's Kafka transaction go the
tombstones of the destroyed keys (and of the profile's other keys published before it) and of the
delivery requests that named the profile's destination, so compaction removes them from the
topics too. Dispatches waiting for a destroyed key stop waiting: that member's request is never
produced.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from leo_activation import db
from leo_activation.consumers import dispatch
from leo_activation.engine.handler import (
    TOMBSTONE,
    ApplyResult,
    Connection,
    Emit,
    Envelope,
    Outgoing,
    Row,
)
from leo_activation.producers.delivery_requests import TOPIC as REQUESTS_TOPIC
from leo_activation.resources import sql_text

KIND = "profile_erase"
KEYS_TOPIC = "profile-keys"


def prepare(e: Envelope) -> Row:
    """An erasure's row: no COPY line (``erase`` applies it with a statement of its own), keyed
    by what ``erase`` reads: the profile, the request's reference and when it was made."""
    r = e.record
    return Row(None, (uuid.UUID(str(r["profile_id"])), r["request_ref"], r["occurred_at"]))


def erase(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, e: Envelope, key: tuple[Any, ...]
) -> ApplyResult:
    """Apply one erasure (``key``: its ``prepare``d key) in the tenant's transaction."""
    profile_id, request_ref, erased_at = key
    params = {"tenant_id": tenant_id, "profile_id": profile_id, "published_ms": e.published_ms}
    query = sql_text("queries/erasure/keys_published_before.sql")
    published_before = [row[0] for row in conn.execute(query, params)]
    row = conn.execute(
        sql_text("queries/erasure/erase.sql"),
        {
            "tenant_id": tenant_id,
            "profile_id": profile_id,
            "request_ref": request_ref,
            "erased_at": erased_at,
            "correlation_id": e.correlation_id,
        },
    ).fetchone()
    assert row is not None
    new, destroyed = bool(row[0]), list(row[1])
    result = ApplyResult(applied=int(new), duplicates=int(not new))
    if destroyed:
        profiles = [profile_id] * len(destroyed)
        result.merge(dispatch.fan_out_waiting_on_keys(conn, tenant_id, profiles, destroyed))
    # also for a duplicate: a crash after the database commit and before the Kafka one must not
    # lose the tombstones
    keys = sorted(set(destroyed) | set(published_before))
    result.later[("erase", tenant_id, profile_id, request_ref)] = Emit(
        functools.partial(_tombstones, tenant_id, profile_id, keys)
    )
    return result


def _tombstones(
    tenant_id: uuid.UUID, profile_id: uuid.UUID, keys: list[uuid.UUID], conn: Connection
) -> Iterator[Outgoing]:
    for key_id in keys:
        yield Outgoing(
            KEYS_TOPIC,
            TOMBSTONE,
            {"tenant_id": tenant_id, "profile_id": profile_id, "key_id": key_id},
        )
    with db.tenant_transaction(conn, tenant_id):
        deliveries = [
            row[0]
            for row in conn.execute(
                sql_text("queries/erasure/queued_deliveries.sql"),
                {"tenant_id": tenant_id, "profile_id": profile_id},
            )
        ]
    for delivery_id in deliveries:
        record = {"tenant_id": tenant_id, "delivery_id": delivery_id}
        yield Outgoing(REQUESTS_TOPIC, TOMBSTONE, record)
