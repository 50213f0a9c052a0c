"""The profile-keys topic -> ``profile_key``: the database's mirror of the profiles' data keys.

The topic is compacted and keyed ``tenant:profile:key_id``; a key ring (``publish``) writes a key
in the same Kafka transaction as the first upsert sealed under it, and a tombstone (no value)
destroys it. The mirror follows: a record adds the key (unless an erasure destroyed it: a rebuild
may read the record before compaction removed it), a tombstone deletes it. Nothing a consumer
applies needs a key, except producing a delivery request: a dispatch waits until the keys of its
members' pinned versions are here (or destroyed), and a key's arrival re-checks the dispatches
waiting for it. The data keys never leave this table but to open a request, a trace, or a
dead letter's value (left out: see ``producers/dead_letters.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from leo_activation.consumers import dispatch
from leo_activation.engine.handler import TOMBSTONE, ApplyResult, Envelope, Gate, Row
from leo_activation.errors import PoisonMessage
from leo_activation.resources import sql_text
from leo_activation.sealing import ALGORITHM, KEY_BYTES

TOPIC = "profile-keys"
KIND = "profile_key"


class ProfileKeysHandler:
    topic = TOPIC
    # keys are mirrored whatever their tenant's status: they are not data, and a key that waited
    # would hold back the dispatches that need it
    gate: Gate | None = None

    def tombstone(self, key: bytes | None) -> dict[str, Any]:
        parts = (key or b"").decode("utf-8", "replace").split(":")
        try:
            tenant, profile, key_id = (uuid.UUID(p) for p in parts)
        except ValueError:
            raise PoisonMessage(
                "bad_uuid", "a profile-keys tombstone's key is not tenant:profile:key_id"
            ) from None
        return {"tenant_id": tenant, "profile_id": profile, "key_id": key_id}

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> Row:
        """No COPY line (the keys are written with one statement a batch), keyed by the profile
        and key id, and for a key (not a tombstone) its data key and creation time."""
        r = envelope.record
        ident = (_uuid(r["profile_id"]), _uuid(r["key_id"]))
        if envelope.kind == TOMBSTONE:
            return Row(None, ident)
        if r["algorithm"] != ALGORITHM or len(r["data_key"]) != KEY_BYTES:
            raise PoisonMessage("bad_key", f"a data key must be {ALGORITHM}, {KEY_BYTES} bytes")
        return Row(None, (*ident, r["data_key"], r["occurred_at"]))

    def apply(
        self, conn: psycopg.Connection[Any], tenant_id: uuid.UUID, batch: list[Envelope]
    ) -> ApplyResult:
        # a key's arrival may complete a dispatch whose other half comes on the commands topic,
        # through another consumer perhaps
        dispatch.lock_waits(conn, tenant_id)
        # the newest message a key wins (a record, then its tombstone)
        newest: dict[tuple[uuid.UUID, uuid.UUID], tuple[Envelope, tuple[Any, ...]]] = {}
        for e in sorted(batch, key=lambda e: (e.partition, e.offset)):
            key = e.row_key if e.row_key is not None else self.prepare(e, {}).key
            assert key is not None, "prepare keys every message"
            newest[key[:2]] = (e, key)
        gone = [key for e, key in newest.values() if e.kind == TOMBSTONE]
        kept = [(e, key) for e, key in newest.values() if e.kind != TOMBSTONE]
        applied = 0
        if gone:
            applied += conn.execute(
                sql_text("queries/keys/delete.sql"),
                {
                    "tenant_id": tenant_id,
                    "profiles": [key[0] for key in gone],
                    "keys": [key[1] for key in gone],
                },
            ).rowcount
        result = ApplyResult()
        if kept:
            arrived = conn.execute(
                sql_text("queries/keys/insert.sql"),
                {
                    "tenant_id": tenant_id,
                    "profiles": [key[0] for _, key in kept],
                    "keys": [key[1] for _, key in kept],
                    "data_keys": [key[2] for _, key in kept],
                    "created": [key[3] for _, key in kept],
                    "published": [e.published_ms for e, _ in kept],
                },
            ).fetchall()
            applied += len(arrived)
            if arrived:
                profiles, keys = [a[0] for a in arrived], [a[1] for a in arrived]
                result.merge(dispatch.fan_out_waiting_on_keys(conn, tenant_id, profiles, keys))
        result.applied += applied
        result.duplicates += len(batch) - applied
        return result


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
