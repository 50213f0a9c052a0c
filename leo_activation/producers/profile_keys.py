"""The key ring of the product's producers: personal fields sealed at the source.

Before a profile upsert leaves the producer, its personal fields (``sealing.SEALED_FIELDS``) are
sealed under a data key of the profile and the plaintext fields emptied (``ProfileUpsert`` v4).
The ring finds a profile's key in the compacted profile-keys topic (read to its end when the ring
is loaded), so every producer seals a profile under the same key and a re-published version is
byte-identical; a profile without one gets a new key, produced to the topic in the same Kafka
transaction as the upsert sealed under it, so a reader never sees ciphertext whose key is not
published. A tombstone (an erasure destroyed the key) removes it from the ring: data published
after an erasure gets a new key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from leo_activation.codec import make_codec
from leo_activation.errors import PoisonMessage
from leo_activation.kafka import read_to_end
from leo_activation.sealing import ALGORITHM, SEALED_FIELDS, new_data_key, seal
from leo_activation.settings import Settings

TOPIC = "profile-keys"  # logical
KIND = "profile_key"
UPSERT = "profile_upsert"
EMPTY_ATTRIBUTES = "{}"

Keyed = tuple[uuid.UUID, uuid.UUID]  # tenant, profile
Message = tuple[str, str, Mapping[str, Any]]  # logical topic, kind, record


class KeyRing:
    """Data keys by profile: ``{(tenant, profile): (key_id, data_key)}``."""

    def __init__(self, keys: Mapping[Keyed, tuple[uuid.UUID, bytes]] | None = None) -> None:
        self.keys = dict(keys or {})

    @classmethod
    def load(cls, settings: Settings) -> KeyRing:
        """The live keys of the profile-keys topic (which must exist). A profile with several
        (rings that did not know of each other's) seals under its oldest, then lowest key id,
        the same choice in every ring."""
        codec = make_codec(settings)
        live: dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], tuple[datetime, bytes]] = {}
        for msg in read_to_end(settings, TOPIC):
            value = msg.value()
            if value is None:
                key = (msg.key() or b"").decode()
                tenant, profile, key_id = (uuid.UUID(part) for part in key.split(":"))
                live.pop((tenant, profile, key_id), None)
                continue
            try:
                _, r = codec.decode(TOPIC, value)
            except PoisonMessage:
                continue  # not a key the consumers mirror either
            ident = (_uuid(r["tenant_id"]), _uuid(r["profile_id"]), _uuid(r["key_id"]))
            live[ident] = (r["occurred_at"], r["data_key"])
        chosen: dict[Keyed, tuple[datetime, uuid.UUID, bytes]] = {}
        for (tenant, profile, key_id), (made, data_key) in live.items():
            best = chosen.get((tenant, profile))
            if best is None or (made, key_id) < best[:2]:
                chosen[(tenant, profile)] = (made, key_id, data_key)
        return cls({k: (key_id, data_key) for k, (_, key_id, data_key) in chosen.items()})

    def seal_all(self, messages: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[Message]:
        """The profile-changes messages with every upsert sealed, each new key just before the
        first upsert sealed under it."""
        for kind, record in messages:
            if kind != UPSERT or not needs_sealing(record):
                yield "profile-changes", kind, record
                continue
            profile = (_uuid(record["tenant_id"]), _uuid(record["profile_id"]))
            if profile not in self.keys:
                key_id, data_key = new_data_key()
                self.keys[profile] = (key_id, data_key)
                yield TOPIC, KIND, {
                    "tenant_id": profile[0], "profile_id": profile[1], "key_id": key_id,
                    "algorithm": ALGORITHM, "data_key": data_key,
                    "occurred_at": datetime.now(UTC),
                }  # fmt: skip
            yield "profile-changes", kind, self.sealed(record)

    def sealed(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """An upsert with its personal fields sealed under the profile's key (in the ring)."""
        key_id, data_key = self.keys[(_uuid(record["tenant_id"]), _uuid(record["profile_id"]))]
        out = dict(record, key_id=key_id, raw_attributes=EMPTY_ATTRIBUTES)
        for name in SEALED_FIELDS:
            value = record.get(name)
            if name == "raw_attributes" and value == EMPTY_ATTRIBUTES:
                value = None
            out[f"{name}_sealed"] = None if value is None else seal(data_key, name, value)
            if name != "raw_attributes":
                out[name] = None
        return out


def needs_sealing(record: Mapping[str, Any]) -> bool:
    """An upsert carrying a personal field in plaintext and not sealed already."""
    if record.get("key_id") is not None:
        return False
    return any(record.get(name) is not None for name in SEALED_FIELDS[:-1]) or record.get(
        "raw_attributes", EMPTY_ATTRIBUTES
    ) not in (None, EMPTY_ATTRIBUTES)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
