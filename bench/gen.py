"""Fast, seeded corpus generators for the benchmarks.

They build the Avro records that ``contracts.from_json`` would build from the documented JSON Lines
shape (``self_check`` proves it on a sample), without paying for JSON parsing and validation on a
million messages; the bytes on the topic come from the product's codec either way.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from leo_activation.codec import make_codec
from leo_activation.contracts import from_json
from leo_activation.kafka import ensure_topics, message_key
from leo_activation.producers import TopicProducer
from leo_activation.producers.profile_keys import KeyRing
from leo_activation.sealing import SEALED_FIELDS
from leo_activation.settings import Settings

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NAMESPACE = uuid.UUID("5d1c6f4e-8f0b-4a7e-9a55-0c2f3b1e6a10")
PROVIDERS = ("sendgrid", "twilio", "zalo", "firebase")
STATUSES = ("sent", "delivered", "opened", "clicked", "failed", "bounced")
Message = tuple[str, dict[str, Any]]  # (kind, Avro record)


def bench_tenants(seed: int, n: int) -> list[uuid.UUID]:
    return [uuid.uuid5(NAMESPACE, f"{seed}:tenant:{i}") for i in range(n)]


def receipts(tenants: list[uuid.UUID], n: int, seed: int = 7) -> Iterator[Message]:
    """``n`` distinct provider receipts (three per delivery), round-robin over tenants."""
    rng = random.Random(seed)
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        yield (
            "delivery_receipt",
            {
                "tenant_id": tenant,
                "delivery_id": uuid.uuid5(NAMESPACE, f"{seed}:{tenant}:delivery:{i // 3}"),
                "provider": rng.choice(PROVIDERS),
                "provider_message_id": f"pm-{seed}-{i}",
                "status": rng.choice(STATUSES),
                "occurred_at": EPOCH + timedelta(seconds=i),
                "destination": f"user{i % 250_000}@example.com",
                "channel": "email",
                "provider_response": json.dumps(
                    {"attempt": i % 5, "code": 250, "smtp": "2.0.0 OK"},
                    sort_keys=True,
                    separators=(",", ":"),
                ),
                "correlation_id": None,
            },
        )


def profile_changes(
    tenants: list[uuid.UUID],
    profiles_per_tenant: int,
    segments: int = 4,
    join_rate: float = 0.5,
    seed: int = 11,
) -> Iterator[Message]:
    """Per profile: one upsert, then a join to each segment with probability ``join_rate``
    (dense per-segment sequences, as the CDP publishes them); round-robin over tenants, as a CDP
    serving several publishes their changes (and as ``receipts`` are)."""
    rng = random.Random(seed)
    sequences = {tenant: [0] * segments for tenant in tenants}
    for p in range(profiles_per_tenant):
        for tenant in tenants:
            profile = uuid.uuid5(NAMESPACE, f"{seed}:{tenant}:profile:{p}")
            yield (
                "profile_upsert",
                {
                    "tenant_id": tenant,
                    "profile_id": profile,
                    "version": 1,
                    "occurred_at": EPOCH + timedelta(seconds=p),
                    "ext_id": f"crm-{p}",
                    "email": f"user{p}@example.com",
                    "mobile_number": f"+8490{p % 10_000_000:07d}",
                    "data_labels": ["vip"] if p % 3 == 0 else [],
                    "push_token": None,
                    "raw_attributes": json.dumps(
                        {"city": rng.choice(["HN", "SG", "HCM"]), "tier": p % 4},
                        sort_keys=True,
                        separators=(",", ":"),
                    ),
                    # every other profile with its email consent (the shape since v3)
                    "consents": [] if p % 2 else [{
                        "channel": "email", "state": "granted", "legal_basis": "consent",
                        "source": "web-form", "occurred_at": EPOCH,
                    }],
                    # nothing sealed (the shape since v4); ``sealed`` seals it
                    "key_id": None, **{f"{name}_sealed": None for name in SEALED_FIELDS},
                    "correlation_id": None,
                },
            )  # fmt: skip
            for s in range(segments):
                if rng.random() < join_rate:
                    sequences[tenant][s] += 1
                    yield (
                        "segment_membership_change",
                        {
                            "tenant_id": tenant,
                            "segment_key": f"segment-{s}",
                            "sequence": sequences[tenant][s],
                            "profile_id": profile,
                            "action": "join",
                            "occurred_at": EPOCH + timedelta(seconds=sequences[tenant][s]),
                            "profile_version": 1,  # the upsert just before pins it
                            "correlation_id": None,
                        },
                    )


def sealed(messages: Iterable[Message]) -> Iterator[Message]:
    """``messages`` as the product's producers publish them: every upsert sealed (ProfileUpsert
    v4, ``KeyRing.sealed``) under a data key of its profile. The keys are made from the profile's
    id, not drawn at random as a key ring's are, so that every run publishes the same bytes; the
    keys topic is not written (the profile-changes consumer does not read it)."""
    ring = KeyRing()
    for kind, record in messages:
        if kind != "profile_upsert":
            yield kind, record
            continue
        profile = (record["tenant_id"], record["profile_id"])
        if profile not in ring.keys:
            key_id = uuid.uuid5(NAMESPACE, f"{profile[0]}:{profile[1]}:key")
            ring.keys[profile] = (key_id, hashlib.sha512(key_id.bytes).digest())
        yield kind, ring.sealed(record)


def _as_json(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, **{name: _json_value(value) for name, value in record.items()}}


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):  # a record inside an array (a consent fact)
        return {name: _json_value(item) for name, item in value.items()}
    return value


def self_check(topic: str, messages: Iterable[Message], sample: int = 50) -> None:
    """The generated records equal what ``from_json`` makes of their JSON Lines form."""
    for i, (kind, record) in enumerate(messages):
        if i >= sample:
            return
        parsed_kind, parsed = from_json(topic, _as_json(kind, record))
        if (parsed_kind, parsed) != (kind, record):
            raise AssertionError(f"generator drifted from the JSON shape: {kind} {record}")


def publish(settings: Settings, topic: str, messages: Iterable[Message]) -> int:
    """Encode with the product's codec and produce with the product's keys; returns the count."""
    ensure_topics(settings)
    codec = make_codec(settings)
    producer = TopicProducer(settings, codec=codec)
    physical = settings.topic(topic)
    n = 0
    for kind, record in messages:
        producer.produce_raw(physical, message_key(topic, record), codec.encode(kind, record))
        n += 1
        if n % 10_000 == 0:
            producer.producer.poll(0)
    producer.flush(300)
    return n
