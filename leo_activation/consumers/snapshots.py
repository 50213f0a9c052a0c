"""Deterministic segment snapshots.

A snapshot request names the CDP's per-segment sequence watermark. It is sealed only when every
membership change 1..watermark has arrived — whichever topic the last piece came on — and its
members are then a pure function of those changes: the profiles whose latest change up to the
watermark is a join. If the request carries an expected count or digest, a mismatch rejects it
instead of sealing.

Sealing (in the apply transaction) writes the immutable snapshot and its members (set-based, one
statement straight from the membership changes) with the profile version each member's latest
join pinned, and queues the snapshot in
``segment_snapshot_tag_pending``; dispatches waiting on it then fan out (once their pinned
profile versions have arrived, see :mod:`leo_activation.consumers.dispatch`).

Tagging each member's ``cdp_profiles.segment_snapshots`` (an UPDATE of every member's profile
row, costlier than the seal itself) is not done in the seal transaction: it is
a ``FollowUp``, run by the engine in its own transaction after the apply
transactions committed and before the batch's Kafka offsets commit. It writes the tags and takes
the snapshot off the queue in one transaction, and is idempotent. After a crash between the seal
and the tagging, the uncommitted offsets re-deliver the messages that sealed it; their handlers
call :func:`seal_ready` for the same segments again, and it returns the tagging of every snapshot
still queued on them. So once the engine has processed a batch, the tags of everything it sealed
are written; the queue is empty at rest and is not part of the state digest.

The member digest covers the profile ids only (what a CDP can recompute to verify a snapshot);
the pinned versions ride along with them.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from leo_activation import db
from leo_activation.consumers import dispatch
from leo_activation.engine.handler import ApplyResult, FollowUp
from leo_activation.resources import sql_text


def seal_ready(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, segments: Sequence[str]
) -> ApplyResult:
    """Seal every pending request on ``segments`` whose changes have all arrived; return (as
    follow-ups) the tagging of every sealed snapshot on ``segments`` whose tags are not written
    yet — sealed now, or sealed before a crash that stopped its tagging."""
    result = ApplyResult()
    pending = conn.execute(
        sql_text("queries/snapshots/pending.sql"),
        {"tenant_id": tenant_id, "segments": list(segments)},
    )
    for (
        snapshot_id,
        segment_key,
        as_of,
        reason,
        expected_count,
        expected_digest,
        requested_at,
    ) in pending.fetchall():
        watermark = {"tenant_id": tenant_id, "segment_key": segment_key, "as_of": as_of}
        arrived = conn.execute(sql_text("queries/snapshots/arrived.sql"), watermark).fetchone()
        if arrived is None or arrived[0] != as_of:
            continue
        row = conn.execute(_with_members("queries/snapshots/member_digest.sql"), watermark)
        summary = row.fetchone()
        assert summary is not None
        count, digest = int(summary[0]), str(summary[1])
        mismatch = _verify(count, digest, expected_count, expected_digest)
        if mismatch:
            conn.execute(
                sql_text("queries/snapshots/reject.sql"),
                {"tenant_id": tenant_id, "snapshot_id": snapshot_id, "detail": mismatch},
            )
            continue
        params = {
            **watermark,
            "snapshot_id": snapshot_id,
            "segment_version": f"seq:{as_of}",
            "reason": reason,
            "member_count": count,
            "member_digest": digest,
            "created_at": requested_at,
        }
        conn.execute(sql_text("queries/snapshots/seal_snapshot.sql"), params)
        conn.execute(_with_members("queries/snapshots/seal_members.sql"), params)
        conn.execute(sql_text("queries/snapshots/seal_tag_pending.sql"), params)
        conn.execute(sql_text("queries/snapshots/seal_request.sql"), params)
        result.merge(dispatch.fan_out_waiting(conn, tenant_id, snapshot_id))
    untagged = conn.execute(
        sql_text("queries/snapshots/tag_pending.sql"),
        {"tenant_id": tenant_id, "segments": list(segments)},
    )
    for (snapshot_id,) in untagged.fetchall():
        result.later[("tag_snapshot", tenant_id, snapshot_id)] = FollowUp(
            tag_members(tenant_id, snapshot_id)
        )
    return result


def tag_members(
    tenant_id: uuid.UUID, snapshot_id: uuid.UUID
) -> Callable[[psycopg.Connection[Any]], None]:
    """The follow-up writing a sealed snapshot on its members' ``cdp_profiles.segment_snapshots``
    and taking it off the tagging queue. The engine runs it in its own transaction without a
    tenant context, so it sets the tenant itself (transaction-local). Idempotent: if the queue no
    longer holds the snapshot, its tags were committed already and it does nothing."""

    def tag(conn: psycopg.Connection[Any]) -> None:
        with db.tenant_transaction(conn, tenant_id):
            params = {"tenant_id": tenant_id, "snapshot_id": snapshot_id}
            if conn.execute(sql_text("queries/snapshots/tag_done.sql"), params).rowcount:
                conn.execute(sql_text("queries/snapshots/tag_profiles.sql"), params)

    return tag


@functools.cache
def _with_members(template: str) -> sql.Composed:
    """A statement over the computed member set of a snapshot (``computed_members.sql``)."""
    members = sql.SQL(sql_text("queries/snapshots/computed_members.sql"))
    return sql.SQL(sql_text(template)).format(members)


def _verify(
    count: int, digest: str, expected_count: int | None, expected_digest: str | None
) -> str | None:
    if expected_count is not None and expected_count != count:
        return f"member count {count} differs from the expected {expected_count}"
    if expected_digest is not None and expected_digest.lower() != digest:
        return f"member digest {digest} differs from the expected {expected_digest}"
    return None
