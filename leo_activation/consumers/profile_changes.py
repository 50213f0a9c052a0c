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

Upserts v4 carry the personal fields sealed under a data key of the profile; they are stored
sealed and never opened here. An erasure (:mod:`leo_activation.consumers.erasure`) is applied in
its place in the partition: the changes before it first, those after it after it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from leo_activation import db, ids
from leo_activation.bulk import copy_line, extended, plain_array, stage
from leo_activation.consumers import dispatch, erasure, snapshots, tenancy
from leo_activation.contracts import DEFAULT_MAX_TEXT
from leo_activation.engine.handler import ApplyResult, Envelope, Gate, Row
from leo_activation.errors import PoisonMessage
from leo_activation.resources import sql_text
from leo_activation.sealing import SEALED_FIELDS

PROFILE_COLUMNS = (
    "tenant_id", "profile_id", "ext_id", "email", "mobile_number", "push_token", "data_labels",
    "raw_attributes", "cdp_version", "content_hash", "updated_at", "consents",
    "key_id", *(f"{name}_sealed" for name in SEALED_FIELDS),
)  # fmt: skip
# what a new profile starts with: recorded for it before it arrived (profiles/segments.sql)
RECORDED_COLUMNS = ("segments", "segment_snapshots")
NOTHING_RECORDED = copy_line(([], []))
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
    key_id, sealed = sealed_fields(r, attributes)
    content = [r["ext_id"], r["email"], r["mobile_number"], r.get("push_token"), labels, attributes,
               r["occurred_at"]]  # fmt: skip
    if consents:  # left out when empty, so a version without consents hashes as before them
        content.append(consents)
    if key_id is not None:  # likewise: plaintext versions hash as before sealing existed
        hexes = {n: v.hex() for n, v in zip(SEALED_FIELDS, sealed, strict=True) if v is not None}
        content.append({"key_id": str(key_id), **hexes})
    return (
        e.tenant_id, uuid.UUID(str(r["profile_id"])), r["ext_id"], r["email"], r["mobile_number"],
        r.get("push_token"), labels, ids.canonical_json(attributes), r["version"],
        hashlib.sha256(ids.canonical_json(content).encode()).digest(), r["occurred_at"],
        ids.canonical_json(consents), key_id, *sealed,
    )  # fmt: skip


def sealed_fields(r: Mapping[str, Any], attributes: Any) -> tuple[uuid.UUID | None, list[Any]]:
    """The data key id and sealed personal fields of an upsert (v4), or (None, Nones) for a
    plaintext one. A sealed upsert carries no personal field in plaintext, and a sealed field
    needs the key it was sealed under: anything else poisons the upsert."""
    sealed = [r.get(f"{name}_sealed") for name in SEALED_FIELDS]
    key = r.get("key_id")
    if key is None:
        if any(value is not None for value in sealed):
            raise PoisonMessage("bad_sealing", "a sealed field without the key_id it is under")
        return None, sealed
    plain = [name for name in SEALED_FIELDS[:-1] if r.get(name) is not None]
    if plain or attributes:
        shown = ", ".join(plain or ["raw_attributes"])
        raise PoisonMessage("bad_sealing", f"a sealed upsert also carries {shown} in plaintext")
    return (key if isinstance(key, uuid.UUID) else uuid.UUID(str(key))), sealed


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
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    upserts: list[Envelope],
    result: ApplyResult,
) -> list[Envelope]:
    """The upserts that do not reuse a CDP version with other content; the others are rejected
    ``version_conflict``. A pinned version must be final once it arrived, or a dispatch's
    destination would depend on whether the reuse came before its fan-out. Upserts of one profile
    share a partition (keyed tenant:profile), so the first in the topic wins in every run: the
    database's versions first, then this batch's in offset order. An exact repeat passes (a
    duplicate)."""
    # offset order: a batch may hold re-read messages after newer ones
    upserts = sorted(upserts, key=lambda e: (e.partition, e.offset))
    keys = [_key(e) for e in upserts]  # (profile id text, version, content hash)
    known: dict[tuple[str, int], set[bytes]] = {}
    params = {
        "tenant_id": tenant_id,
        "profiles": plain_array(k[0] for k in keys),
        "versions": plain_array(k[1] for k in keys),
    }
    for profile, version, content_hash in conn.execute(
        sql_text("queries/profiles/versions_known.sql"), params
    ):
        known.setdefault((profile, version), set()).add(bytes(content_hash))
    accepted: list[Envelope] = []
    for e, (profile, version, content_hash) in zip(upserts, keys, strict=True):
        hashes = known.setdefault((profile, version), set())
        if hashes and content_hash not in hashes:
            result.rejected.append((e, PoisonMessage(
                "version_conflict",
                f"profile {profile} version {version} is already recorded with different "
                "content; a CDP version is final once published",
            )))  # fmt: skip
            continue
        hashes.add(content_hash)
        accepted.append(e)
    return accepted


def prepare_row(e: Envelope, json_fields: Mapping[str, Any] | None = None) -> Row:
    """The COPY line of a profile upsert (keyed by its profile id text, version and content hash)
    or of a membership change (keyed by its segment and profile id text); an erasure's key
    (``erasure.prepare``)."""
    if e.kind == "profile_upsert":
        row = profile_row(e, (json_fields or {}).get("raw_attributes"))
        return Row(copy_line(row), (str(row[1]), row[8], row[9]))
    if e.kind == erasure.KIND:
        return erasure.prepare(e)
    row = membership_row(e)
    return Row(copy_line(row), (row[1], str(row[3])))


def _prepared(e: Envelope) -> Row:
    return prepare_row(e) if e.row_key is None else Row(e.row, e.row_key)


def _line(e: Envelope) -> bytes:
    line = _prepared(e).line
    assert line is not None, "prepare_row writes a line for every upsert and membership change"
    return line


def _key(e: Envelope) -> tuple[Any, ...]:
    key = _prepared(e).key
    assert key is not None, "prepare_row keys every row"
    return key


def _segments(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    touched: set[str],
    upserted: set[str],
) -> dict[str, bytes]:
    """Refresh the current segments of the ``touched`` profiles; return, per ``upserted``
    profile with anything recorded already, the COPY fields of ``RECORDED_COLUMNS``
    (``profiles/segments.sql``)."""
    params = {
        "tenant_id": tenant_id,
        "profile_ids": plain_array(touched | upserted),
        "touched": plain_array(touched),
        "upserted": plain_array(upserted),
    }
    return {
        profile: copy_line((segments, snapshots))
        for profile, segments, snapshots in conn.execute(
            sql_text("queries/profiles/segments.sql"), params
        )
    }


def _in_topic_order(e: Envelope) -> tuple[int, int]:
    return e.partition, e.offset


def _unblocked(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, versions: list[tuple[Any, ...]]
) -> list[uuid.UUID]:
    """The waiting dispatches the newly arrived profile ``versions`` may have completed."""
    params = {
        "tenant_id": tenant_id,
        "profiles": plain_array(v[0] for v in versions),
        "versions": plain_array(v[1] for v in versions),
    }
    rows = conn.execute(sql_text("queries/profiles/versions_unblocked.sql"), params)
    return [r[0] for r in rows]


class ProfileChangesHandler:
    topic = "profile-changes"
    gate: Gate | None = tenancy.TENANCY
    # what consents_by_channel allows, for the native path to accept exactly the same facts
    native_rules = {"consent_channels": dispatch.CHANNELS, "consent_states": CONSENT_STATES}

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> Row:
        return prepare_row(envelope, json_fields)

    def apply(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
    ) -> ApplyResult:
        """The changes before an erasure are applied before it, those after it after it (a
        profile's changes share a partition, so this is the same order in every run)."""
        result = ApplyResult()
        # upserts may unblock a dispatch, changes may seal a snapshot: both halves of waits
        # whose other half comes on the commands topic, through another consumer perhaps
        dispatch.lock_waits(conn, tenant_id)
        part: list[Envelope] = []
        for e in sorted(batch, key=_in_topic_order):
            if e.kind == erasure.KIND:
                self._apply_changes(conn, tenant_id, part, result)
                part = []
                result.merge(erasure.erase(conn, tenant_id, e, _key(e)))
            else:
                part.append(e)
        self._apply_changes(conn, tenant_id, part, result)
        return result

    def _apply_changes(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
        result: ApplyResult,
    ) -> None:
        upserts = [e for e in batch if e.kind == "profile_upsert"]
        if upserts:
            upserts = refuse_version_conflicts(conn, tenant_id, upserts, result)
        changes = [e for e in batch if e.kind == "segment_membership_change"]
        touched: set[str] = set()
        if changes:
            stage(conn, "segment_membership_change", MEMBERSHIP_COLUMNS, map(_line, changes))
            inserted = db.written(conn.execute(sql_text("queries/profiles/membership_insert.sql")))
            result.applied += inserted
            result.duplicates += len(changes) - inserted
            if inserted:
                touched = {_key(e)[1] for e in changes}
        upserted = [(_key(e)[0], _line(e)) for e in upserts]
        recorded: dict[str, bytes] = {}
        if upserted or touched:
            # after the membership changes: a profile new in this batch is then inserted with its
            # segments as they stand, where refreshing it after would write it twice
            recorded = _segments(conn, tenant_id, touched, {profile for profile, _ in upserted})
        if upserts:
            lines = [extended(line, recorded.get(p, NOTHING_RECORDED)) for p, line in upserted]
            stage(conn, "cdp_profiles", (*PROFILE_COLUMNS, *RECORDED_COLUMNS), lines)
            changed = db.written(conn.execute(sql_text("queries/profiles/upsert.sql")))
            versions = conn.execute(sql_text("queries/profiles/versions_insert.sql")).fetchall()
            new_versions = len(versions)
            unblocked = _unblocked(conn, tenant_id, versions) if versions else []
            # A late older version changes no profile but is new history: it was applied.
            applied = max(changed, new_versions)
            result.applied += applied
            result.duplicates += len(upserts) - applied
            if unblocked:
                result.merge(dispatch.fan_out(conn, tenant_id, unblocked))
        if changes:
            # Also when every change was a duplicate: the re-delivery after a crash between a
            # seal and its tagging follow-up must hand the tagging back (snapshots.seal_ready).
            segments = sorted({_key(e)[0] for e in changes})
            result.merge(snapshots.seal_ready(conn, tenant_id, segments))
