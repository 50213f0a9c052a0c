"""Synthetic, seeded corpora in the documented JSON Lines shape of each topic.

One generator serves the demo, the benchmarks and the tests: the same seed gives the same
messages, byte for byte. Messages are listed per topic in the order a producer would publish
them (per-key order is what Kafka preserves; everything else may interleave).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
RECEIPT_STATUSES = ("sent", "delivered", "opened", "clicked", "failed", "bounced")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def seeded_uuid(seed: int, *parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, ":".join(map(str, (seed, *parts)))))


@dataclass
class Corpus:
    """Messages per logical topic, in publish order."""

    topics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, topic: str, message: dict[str, Any]) -> None:
        self.topics.setdefault(topic, []).append(message)

    def count(self) -> int:
        return sum(len(m) for m in self.topics.values())


def tenants(seed: int, n: int) -> list[str]:
    return [seeded_uuid(seed, "tenant", i) for i in range(n)]


def build(
    seed: int = 1,
    *,
    n_tenants: int = 2,
    n_profiles: int = 20,
    n_segments: int = 2,
    n_receipts: int = 60,
    duplicate_rate: float = 0.1,
) -> Corpus:
    """Tenants, CDP profiles with versions and segment memberships, and provider receipts."""
    rng = random.Random(seed)
    corpus = Corpus()
    for t, tenant in enumerate(tenants(seed, n_tenants)):
        corpus.add(
            "commands",
            {"type": "tenant_register", "tenant_id": tenant, "tenant_name": f"Tenant {t}",
             "occurred_at": _iso(EPOCH)},
        )  # fmt: skip
        sequences = dict.fromkeys(range(n_segments), 0)
        for p in range(n_profiles):
            profile = seeded_uuid(seed, tenant, "profile", p)
            for version in (1, 2):
                corpus.add(
                    "profile-changes",
                    {
                        "type": "profile_upsert", "tenant_id": tenant, "profile_id": profile,
                        "version": version, "occurred_at": _iso(EPOCH + timedelta(minutes=version)),
                        "ext_id": f"crm-{p}", "email": f"user{p}.v{version}@example.com",
                        "mobile_number": f"+8490{p:07d}", "data_labels": ["vip"] if p % 3 else [],
                        "push_token": None, "raw_attributes": {"city": rng.choice(["HN", "SG"])},
                    },
                )  # fmt: skip
            for s in range(n_segments):
                if rng.random() < 0.7:
                    for action in ("join", "leave", "join")[: rng.randint(1, 3)]:
                        sequences[s] += 1
                        corpus.add(
                            "profile-changes",
                            {
                                "type": "segment_membership_change", "tenant_id": tenant,
                                "segment_key": f"segment-{s}", "sequence": sequences[s],
                                "profile_id": profile, "action": action,
                                "occurred_at": _iso(EPOCH + timedelta(seconds=sequences[s])),
                            },
                        )  # fmt: skip
        for r in range(n_receipts):
            delivery = seeded_uuid(seed, tenant, "delivery", r % max(1, n_receipts // 3))
            receipt = {
                "type": "delivery_receipt", "tenant_id": tenant, "delivery_id": delivery,
                "provider": rng.choice(["sendgrid", "twilio", "zalo"]),
                "provider_message_id": f"pm-{r}", "status": rng.choice(RECEIPT_STATUSES),
                "occurred_at": _iso(EPOCH + timedelta(hours=1, seconds=r)),
                "destination": f"user{r}@example.com", "channel": "email",
                "provider_response": {"code": 250, "attempt": r},
            }  # fmt: skip
            corpus.add("receipts", receipt)
            if rng.random() < duplicate_rate:
                corpus.add("receipts", dict(receipt))
    return corpus
