"""CDP profile changes -> ``cdp_profiles`` and the segment membership history.

Profile upserts are guarded by the CDP's version (an older change never overwrites a newer one, in
any arrival order; a version reused with other content is dead-lettered ``version_conflict``);
every version is also kept in the append-only ``cdp_profile_version`` history,
because a dispatch takes each recipient's destination from the exact version its segment join
pinned, never from "the current profile" (see :mod:`leo_activation.consumers.dispatch`). A new
version can complete a dispatch that was waiting for it, so the dispatches it may unblock are
re-checked.

Membership changes are kept as history keyed by their per-segment sequence, with the profile
version a join pinned; current segments are recomputed from it, and snapshot requests waiting for
these sequences are sealed once complete (see :mod:`leo_activation.consumers.snapshots`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from leo_activation import ids
from leo_activation.bulk import stage
from leo_activation.consumers import dispatch, snapshots, tenancy
from leo_activation.contracts import DEFAULT_MAX_TEXT
from leo_activation.engine.handler import ApplyResult, Envelope, Gate
from leo_activation.errors import PoisonMessage
from leo_activation.resources import sql_text

PROFILE_COLUMNS = (
    "tenant_id", "profile_id", "ext_id", "email", "mobile_number", "push_token", "data_labels",
    "raw_attributes", "cdp_version", "content_hash", "updated_at", "consents",
)  # fmt: skip
CONSENT_STATES = frozenset({"granted", "revoked"})
MEMBERSHIP_COLUMNS = (
    "tenant_id", "segment_key", "sequence", "profile_id", "action", "occurred_at",
    "profile_version",
)  # fmt: skip


def profile_row(e: Envelope, attributes: Any = None) -> tuple[Any, ...]:
    r = e.record
    if attributes is None:  # validation's parse of raw_attributes, when the caller has it
        attributes = json.loads(r["raw_attributes"])
    labels = sorted(set(r.get("data_labels") or []))
    consents = consents_by_channel(r.get("consents") or [])
    content = [r["ext_id"], r["email"], r["mobile_number"], r.get("push_token"), labels, attributes,
               r["occurred_at"]]  # fmt: skip
    if consents:  # left out when empty, so a version without consents hashes as before them
        content.append(consents)
    return (
        e.tenant_id, uuid.UUID(str(r["profile_id"])), r["ext_id"], r["email"], r["mobile_number"],
        r.get("push_token"), labels, ids.canonical_json(attributes), r["version"],
        hashlib.sha256(ids.canonical_json(content).encode()).digest(), r["occurred_at"],
        ids.canonical_json(consents),
    )  # fmt: skip


def consents_by_channel(facts: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A version's consent facts keyed by channel (how they are stored and hashed); a fact for an
    unknown channel or state, or a second fact for one channel, poisons the upsert."""
    consents: dict[str, dict[str, Any]] = {}
    for fact in facts:
        channel, state = fact["channel"], fact["state"]
        if channel not in dispatch.CHANNELS:
            raise PoisonMessage("bad_consent", f"consent for unknown channel {channel[:40]!r}")
        if state not in CONSENT_STATES:
            raise PoisonMessage("bad_consent", f"consent state {state[:40]!r} is unknown")
        if channel in consents:
            raise PoisonMessage("bad_consent", f"two consent facts for channel {channel}")
        for name in ("legal_basis", "source"):
            if len(fact[name]) > DEFAULT_MAX_TEXT or "\x00" in fact[name]:
                raise PoisonMessage("bad_consent", f"consent {name} is too long or holds a NUL")
        consents[channel] = {
            "state": state,
            "legal_basis": fact["legal_basis"],
            "source": fact["source"],
            "occurred_at": fact["occurred_at"],
        }
    return consents


def membership_row(e: Envelope) -> tuple[Any, ...]:
    r = e.record
    return (e.tenant_id, r["segment_key"], r["sequence"], uuid.UUID(str(r["profile_id"])),
            r["action"], r["occurred_at"], r.get("profile_version"))  # fmt: skip


def refuse_version_conflicts(
    conn: psycopg.Connection[Any], upserts: list[Envelope], result: ApplyResult
) -> list[Envelope]:
    """The upserts that do not reuse a CDP version with other content; the others are rejected
    ``version_conflict``. A pinned version must be final once it arrived, or a dispatch's
    destination would depend on whether the reuse came before its fan-out. Upserts of one profile
    share a partition (keyed tenant:profile), so the first in the topic wins in every run: the
    database's versions first, then this batch's in offset order. An exact repeat passes (a
    duplicate)."""
    # offset order: a batch may hold re-read messages after newer ones
    upserts = sorted(upserts, key=lambda e: (e.partition, e.offset))
    rows = [_row(e) for e in upserts]
    known: dict[tuple[uuid.UUID, int], set[bytes]] = {}
    params = {"profiles": [r[1] for r in rows], "versions": [r[8] for r in rows]}
    for profile, version, content_hash in conn.execute(
        sql_text("queries/profiles/versions_known.sql"), params
    ):
        known.setdefault((profile, version), set()).add(bytes(content_hash))
    accepted: list[Envelope] = []
    for e, r in zip(upserts, rows, strict=True):
        key, content_hash = (r[1], r[8]), r[9]
        hashes = known.setdefault(key, set())
        if hashes and content_hash not in hashes:
            result.rejected.append((e, PoisonMessage(
                "version_conflict",
                f"profile {r[1]} version {r[8]} is already recorded with different content; "
                "a CDP version is final once published",
            )))  # fmt: skip
            continue
        hashes.add(content_hash)
        accepted.append(e)
    return accepted


def _row(e: Envelope, json_fields: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    if e.row is not None:
        return e.row
    if e.kind == "profile_upsert":
        return profile_row(e, (json_fields or {}).get("raw_attributes"))
    return membership_row(e)


class ProfileChangesHandler:
    topic = "profile-changes"
    gate: Gate | None = tenancy.TENANCY

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> tuple[Any, ...]:
        return _row(envelope, json_fields)

    def apply(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
    ) -> ApplyResult:
        result = ApplyResult()
        # upserts may unblock a dispatch, changes may seal a snapshot: both halves of waits
        # whose other half comes on the commands topic, through another consumer perhaps
        dispatch.lock_waits(conn, tenant_id)
        upserts = [e for e in batch if e.kind == "profile_upsert"]
        if upserts:
            upserts = refuse_version_conflicts(conn, upserts, result)
        changes = [e for e in batch if e.kind == "segment_membership_change"]
        if upserts:
            stage(conn, "cdp_profiles", PROFILE_COLUMNS, map(_row, upserts))
            changed = conn.execute(sql_text("queries/profiles/upsert.sql")).rowcount
            row = conn.execute(sql_text("queries/profiles/versions_insert.sql")).fetchone()
            assert row is not None
            new_versions, unblocked = int(row[0]), list(row[1])
            # A late older version changes no profile but is new history: it was applied.
            applied = max(changed, new_versions)
            result.applied += applied
            result.duplicates += len(upserts) - applied
            if unblocked:
                result.merge(dispatch.fan_out(conn, tenant_id, unblocked))
        if changes:
            stage(conn, "segment_membership_change", MEMBERSHIP_COLUMNS, map(_row, changes))
            inserted = conn.execute(sql_text("queries/profiles/membership_insert.sql")).rowcount
            result.applied += inserted
            result.duplicates += len(changes) - inserted
            if inserted:
                conn.execute(sql_text("queries/profiles/refresh_segments.sql"))
            # Also when every change was a duplicate: the re-delivery after a crash between a
            # seal and its tagging follow-up must hand the tagging back (snapshots.seal_ready).
            segments = sorted({e.record["segment_key"] for e in changes})
            result.merge(snapshots.seal_ready(conn, tenant_id, segments))
        return result
