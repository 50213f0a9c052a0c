"""Synthetic, seeded corpora in the documented JSON Lines shape of each topic.

One generator serves the demo, the benchmarks and the tests: the same seed gives the same
messages, byte for byte. Messages are listed per topic in the order a producer would publish
them (per-key order is what Kafka preserves; everything else may interleave).

With ``with_activation`` each tenant also gets the activation story: a campaign, an event, a
snapshot request at segment-0's final sequence (with the expected member count and digest), the
planning agent's decision with its reasoning, a dispatch, and provider receipts for a few of the
delivery ids that dispatch creates; its segment joins pin the profile version they saw.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from leo_activation import ids

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
    with_activation: bool = False,
    with_contact_policy: bool = False,
) -> Corpus:
    """Tenants, CDP profiles with versions and segment memberships, and provider receipts; with
    ``with_activation``, each tenant's campaign, event, snapshot, agent decision and dispatch;
    with ``with_contact_policy`` as well, consent facts on the profiles' newest versions, a
    contact policy requiring consent and capping the channel at one delivery a week, and a
    reminder event dispatched to the same snapshot after the first (over the cap)."""
    rng = random.Random(seed)
    corpus = Corpus()
    for t, tenant in enumerate(tenants(seed, n_tenants)):
        corpus.add(
            "commands",
            {"type": "tenant_register", "tenant_id": tenant, "tenant_name": f"Tenant {t}",
             "occurred_at": _iso(EPOCH)},
        )  # fmt: skip
        sequences = dict.fromkeys(range(n_segments), 0)
        latest: dict[str, str] = {}  # segment-0: profile -> its latest action
        numbers: dict[str, int] = {}  # profile -> p (its email and phone are made from p)
        for p in range(n_profiles):
            profile = seeded_uuid(seed, tenant, "profile", p)
            numbers[profile] = p
            for version in (1, 2):
                corpus.add(
                    "profile-changes",
                    {
                        "type": "profile_upsert", "tenant_id": tenant, "profile_id": profile,
                        "version": version, "occurred_at": _iso(EPOCH + timedelta(minutes=version)),
                        "ext_id": f"crm-{p}", "email": f"user{p}.v{version}@example.com",
                        "mobile_number": f"+8490{p:07d}", "data_labels": ["vip"] if p % 3 else [],
                        "push_token": None, "raw_attributes": {"city": rng.choice(["HN", "SG"])},
                        **({"consents": _consents(p)} if with_contact_policy and version == 2
                           else {}),
                    },
                )  # fmt: skip
            for s in range(n_segments):
                if rng.random() < 0.7:
                    for action in ("join", "leave", "join")[: rng.randint(1, 3)]:
                        sequences[s] += 1
                        change = {
                            "type": "segment_membership_change", "tenant_id": tenant,
                            "segment_key": f"segment-{s}", "sequence": sequences[s],
                            "profile_id": profile, "action": action,
                            "occurred_at": _iso(EPOCH + timedelta(seconds=sequences[s])),
                        }  # fmt: skip
                        if with_activation:
                            change["profile_version"] = 2  # the newest, published just before
                        corpus.add("profile-changes", change)
                        if s == 0:
                            latest[profile] = action
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
        if with_activation:
            members = sorted(profile for profile, action in latest.items() if action == "join")
            _activation(
                corpus, seed, t, tenant, as_of=sequences[0] if n_segments else 0,
                members=[(m, numbers[m]) for m in members], with_receipts=n_receipts > 0,
                with_contact_policy=with_contact_policy,
            )  # fmt: skip
    return corpus


ACTIVATION_CHANNELS = ("email", "sms")  # tenant t's event uses ACTIVATION_CHANNELS[t % 2]


def activation_keys(t: int) -> dict[str, str]:
    """The natural keys of tenant ``t``'s activation story (tests and the demo look them up)."""
    return {
        "campaign_code": "spring-sale",
        "event_key": f"spring-{ACTIVATION_CHANNELS[t % 2]}",
        "segment_key": "segment-0",
        "task_key": "plan-spring",
        "dispatch_key": "dispatch-spring-1",
    }


def _activation(
    corpus: Corpus,
    seed: int,
    t: int,
    tenant: str,
    *,
    as_of: int,
    members: list[tuple[str, int]],
    with_receipts: bool,
    with_contact_policy: bool = False,
) -> None:
    """One tenant's campaign -> event -> snapshot -> agent decision -> dispatch (+ receipts).
    ``members``: segment-0's members at ``as_of`` as (profile id, profile number), sorted."""
    keys = activation_keys(t)
    code, event_key = keys["campaign_code"], keys["event_key"]
    channel = ACTIVATION_CHANNELS[t % 2]
    at = EPOCH + timedelta(hours=2)
    # sha256 over the sorted member ids, one per line: what snapshots/member_digest.sql computes
    digest = hashlib.sha256("\n".join(m for m, _ in members).encode()).hexdigest()
    embedding = [round(((i * 37 + seed) % 101) / 100 - 0.5, 2) for i in range(384)]
    commands: list[dict[str, Any]] = [
        {"type": "campaign_define", "tenant_id": tenant, "campaign_code": code,
         "campaign_name": "Spring sale", "objective": "re-engage buyers before the spring season",
         "status": "active", "start_at": _iso(EPOCH), "end_at": _iso(EPOCH + timedelta(days=30)),
         "occurred_at": _iso(at)},
        {"type": "event_define", "tenant_id": tenant, "campaign_code": code,
         "event_key": event_key, "event_name": f"Spring sale {channel} blast",
         "event_type": channel, "event_channel": channel,
         "start_at": _iso(at + timedelta(hours=1)), "end_at": _iso(at + timedelta(days=2)),
         "embedding": embedding if t == 0 else None, "status": "active",
         "occurred_at": _iso(at + timedelta(minutes=1))},
        {"type": "snapshot_request", "tenant_id": tenant, "segment_key": keys["segment_key"],
         "as_of_sequence": as_of, "snapshot_reason": f"audience of {event_key}",
         "expected_count": len(members), "expected_digest": digest,
         "occurred_at": _iso(at + timedelta(minutes=2))},
        {"type": "agent_task_record", "tenant_id": tenant, "task_key": keys["task_key"],
         "agent_name": "planner-ai", "task_type": "plan", "campaign_code": code,
         "event_key": event_key, "segment_key": keys["segment_key"], "as_of_sequence": as_of,
         "reasoning_summary": f"{keys['segment_key']} responded best to {channel}; send the "
                              "spring offer to its members at the sequence watermark",
         "reasoning_trace": {"model": "planner-v1", "inputs": {"segment": keys["segment_key"],
                             "as_of_sequence": as_of, "members": len(members)},
                             "steps": ["score segments", f"choose channel {channel}",
                                       "request snapshot", "dispatch"]},
         "status": "completed", "occurred_at": _iso(at + timedelta(minutes=3)),
         "correlation_id": f"corr-{seed}-{t}"},
        {"type": "dispatch_request", "tenant_id": tenant, "dispatch_key": keys["dispatch_key"],
         "campaign_code": code, "event_key": event_key, "segment_key": keys["segment_key"],
         "as_of_sequence": as_of, "task_key": keys["task_key"],
         "occurred_at": _iso(at + timedelta(minutes=4)), "correlation_id": f"corr-{seed}-{t}"},
    ]  # fmt: skip
    if with_contact_policy:
        commands = [_policy(tenant, channel, at), *commands,
                    *_reminder(commands, keys, at + timedelta(minutes=5))]  # fmt: skip
    for command in commands:
        corpus.add("commands", command)
    if not with_receipts:
        return
    event = ids.event_id(tenant, code, event_key)
    provider = "sendgrid" if channel == "email" else "twilio"
    for k, (profile, p) in enumerate(members[:3]):
        destination = f"user{p}.v2@example.com" if channel == "email" else f"+8490{p:07d}"
        for n, status in enumerate(("sent", "delivered", "opened")[: 3 - k]):
            corpus.add(
                "receipts",
                {"type": "delivery_receipt", "tenant_id": tenant,
                 "delivery_id": str(ids.delivery_id(tenant, event, profile)),
                 "provider": provider, "provider_message_id": f"act-{t}-{k}", "status": status,
                 "occurred_at": _iso(at + timedelta(hours=1, minutes=k, seconds=n)),
                 "destination": destination, "channel": channel,
                 "provider_response": {"code": 250, "step": n}},
            )  # fmt: skip


def _consents(p: int) -> list[dict[str, Any]]:
    """Profile ``p``'s consent facts: every fourth revoked, every fourth (offset 2) without any."""
    if p % 4 == 2:
        return []
    state = "revoked" if p % 4 == 1 else "granted"
    return [
        {"channel": channel, "state": state, "legal_basis": "consent", "source": "web-form",
         "occurred_at": _iso(EPOCH)}
        for channel in ACTIVATION_CHANNELS
    ]  # fmt: skip


def _policy(tenant: str, channel: str, at: datetime) -> dict[str, Any]:
    return {"type": "contact_policy_set", "tenant_id": tenant, "channel": channel,
            "consent_required": True, "frequency_cap_max": 1,
            "frequency_cap_window_s": 7 * 24 * 3600, "occurred_at": _iso(at)}  # fmt: skip


def _reminder(
    commands: list[dict[str, Any]], keys: dict[str, str], at: datetime
) -> list[dict[str, Any]]:
    """A second event of the campaign on the same channel, decided and dispatched to the same
    snapshot: with the cap at one a week, every member the first dispatch queued is over it."""
    event, task, dispatch = (
        dict(next(c for c in commands if c["type"] == kind))
        for kind in ("event_define", "agent_task_record", "dispatch_request")
    )
    key = f"{keys['event_key']}-reminder"
    event.update(event_key=key, event_name=f"{event['event_name']} reminder", embedding=None)
    task.update(task_key=f"{keys['task_key']}-reminder", event_key=key)
    dispatch.update(
        dispatch_key=f"{keys['dispatch_key']}-reminder", event_key=key, task_key=task["task_key"]
    )
    for n, command in enumerate((event, task, dispatch)):
        command["occurred_at"] = _iso(at + timedelta(minutes=n))
    return [event, task, dispatch]
