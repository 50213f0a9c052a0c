"""Traffic that waits for its tenant's registration must not starve the commands it waits for:
a backlog of many batches whose registrations sit behind other commands is applied whole, in one
run, and a rebuild from offset 0 (verify) finishes too. Over such a run the accounting adds up to
what was published: a message read again behind a waiting offset is not consumed again, nor a
duplicate."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from leo_activation.consumers import HANDLERS
from leo_activation.dev import corpus
from leo_activation.dev.corpus import Corpus
from leo_activation.engine.decode import Polled
from leo_activation.engine.handler import Envelope
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.engine.waiting import CANNOT_TELL_MS, Waiting
from leo_activation.ops import verify
from leo_activation.settings import Settings
from tests.fix_app import publish_corpus, read_topic
from tests.fix_db import DbUrls
from tests.test_cli_errors import closed_port

TENANTS, PROFILES, RECEIPTS = 4, 100, 600
FILLERS = 800  # other tenants' registrations, ahead of the traffic's on the commands topic
BATCH = 200


def _backlog() -> tuple[Corpus, Corpus, Corpus, int]:
    """(early commands, commands, traffic, true duplicates in the traffic). The late tenants'
    registrations come last; the early tenants' are applied before, and their traffic is
    interleaved with the late ones' in the same partitions, behind the same waiting offsets."""
    late = corpus.build(71, n_tenants=TENANTS, n_profiles=PROFILES, n_receipts=RECEIPTS)
    early = corpus.build(73, n_tenants=2, n_profiles=PROFILES // 2, n_receipts=RECEIPTS // 2)
    fillers = [
        {"type": "tenant_register", "tenant_id": tenant, "tenant_name": f"Filler {i}",
         "occurred_at": "2026-01-01T00:00:00Z"}
        for i, tenant in enumerate(corpus.tenants(72, FILLERS))
    ]  # fmt: skip
    registered = Corpus({"commands": early.topics["commands"]})
    commands = Corpus({"commands": fillers + late.topics["commands"]})
    traffic = Corpus()
    for topic in ("profile-changes", "receipts"):
        a, b = late.topics[topic], early.topics[topic]
        for i in range(max(len(a), len(b))):
            for part in (a, b):
                if i < len(part):
                    traffic.add(topic, part[i])
    seen: set[str] = set()
    duplicates = 0
    for message in traffic.topics["receipts"]:
        text = json.dumps(message, sort_keys=True)
        duplicates += text in seen
        seen.add(text)
    return registered, commands, traffic, duplicates


def _count(db: DbUrls, table: str) -> int:
    with psycopg.connect(db.admin_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(300)
def test_a_backlog_waiting_behind_its_registrations_is_applied_in_one_run(
    settings: Settings, db: DbUrls
) -> None:
    settings = settings.with_overrides(batch_size=BATCH)
    registered, commands, traffic, true_duplicates = _backlog()
    batches: list[BatchStats] = []
    publish_corpus(settings, registered)
    Engine(settings, HANDLERS, on_batch=batches.append).run(until_idle=2)
    publish_corpus(settings, commands)  # registrations last, after the fillers
    publish_corpus(settings, traffic)
    # with the data key publish made for each profile it sealed (never held back: not data)
    keys = len(read_topic(settings, "profile-keys"))
    assert keys == TENANTS * PROFILES + PROFILES
    produced = registered.count() + commands.count() + traffic.count() + keys
    assert traffic.count() >= 20 * BATCH

    Engine(settings, HANDLERS, on_batch=batches.append).run(until_idle=3)

    assert sum(b.deferred for b in batches) > 0  # traffic did wait for its registrations
    assert all(b.balanced() for b in batches), [b for b in batches if not b.balanced()]
    assert all(c.balanced() for b in batches for c in b.topics.values())
    consumed = sum(b.consumed for b in batches)
    applied = sum(b.applied for b in batches)
    duplicates = sum(b.duplicates for b in batches)
    dead = sum(b.dead_lettered for b in batches)
    assert sum(b.resumed for b in batches) == sum(b.deferred for b in batches)  # all settled
    assert consumed == produced  # distinct offsets, however often a waiting batch was read
    assert (applied, duplicates, dead) == (produced - true_duplicates, true_duplicates, 0)
    per_topic = {
        t: sum(b.topics[t].consumed for b in batches if t in b.topics)
        for t in ("commands", "profile-changes", "receipts")
    }
    assert per_topic == {
        "commands": registered.count() + commands.count(),
        **{t: len(m) for t, m in traffic.topics.items()},
    }
    assert _count(db, "tenant") == TENANTS + 2 + FILLERS
    assert _count(db, "cdp_profiles") == TENANTS * PROFILES + PROFILES
    assert _count(db, "delivery_log") == len(traffic.topics["receipts"]) - true_duplicates

    # a rebuild from offset 0 of the same backlog, in one run, reaches the same state
    outcome = verify.verify(settings, live_group=settings.group_id, idle=3)
    assert outcome.difference is None, outcome.difference
    assert outcome.digest is not None


@pytest.mark.timeout(300)
def test_upstream_positions_the_cluster_does_not_answer_for_make_the_messages_wait(
    settings: Settings,
) -> None:
    """Brokers that stop answering (a partitioned network, a client whose connection never
    comes back) must not hold the loop in a question forever, where no signal stops it: after
    its patience the upstream horizon is 'cannot tell', so every gated message waits (none is
    judged on a guess) and the loop goes on polling."""
    unreachable = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{closed_port()}"})
    waiting = Waiting(unreachable, HANDLERS, "test-horizons", patience_s=2.0)
    upstream, gated = next(iter(waiting.gated.items()))
    tenant = uuid.uuid4()
    envelope = Envelope(sorted(gated)[0], 0, 0, None, "any", {}, tenant, None)
    polled = Polled(messages=[], by_tenant={tenant: [envelope]}, dead=[], raw={}, spans={})
    answers: list[dict[str, int | None]] = []
    asking = threading.Thread(target=lambda: answers.append(waiting.horizons(polled)), daemon=True)
    try:
        asking.start()
        asking.join(timeout=240)
    finally:
        waiting.close()
    assert answers == [{upstream: CANNOT_TELL_MS}]
