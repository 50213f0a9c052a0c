"""Property-based: the state is a function of the topics' contents, not of their interleaving.

For random corpora (tenants, CDP profiles and memberships, campaigns, events, snapshot requests,
agent decisions, dispatches and receipts), any interleaving across topics and partitions that
keeps per-key order (the only order Kafka promises), with random duplicates (redeliveries) and
random batch boundaries, must give the digest of the same corpus applied in publish order
(SPEC §4.1-4.3). Messages go through the real codec and the engine's real decode and apply path
against the real database; only the broker is left out, because its interleaving is exactly
what the test must control.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_activation import corpus, db
from leo_activation.contracts import from_json
from leo_activation.devstack import Endpoints
from leo_activation.digest import state_digest
from leo_activation.engine import Engine
from leo_activation.handling import Envelope
from leo_activation.settings import Settings
from leo_activation.topics import message_key
from tests.fix_db import fresh_database

Keyed = tuple[str, bytes, bytes]  # (logical topic, key, value)


def encoded(engine: Engine, c: corpus.Corpus) -> tuple[list[Keyed], list[Keyed]]:
    """The corpus as the bytes a producer would publish, in publish order: the tenant
    registrations, and everything else."""
    registrations: list[Keyed] = []
    rest: list[Keyed] = []
    for topic in ("commands", "profile-changes", "receipts"):
        for message in c.topics.get(topic, []):
            kind, record = from_json(topic, message)
            keyed = (topic, message_key(topic, record), engine.codec.encode(kind, record))
            (registrations if kind == "tenant_register" else rest).append(keyed)
    return registrations, rest


def interleave(messages: list[Keyed], rng: random.Random, duplicate_rate: float) -> list[Keyed]:
    """A random merge of the per-key sequences, then redelivered copies anywhere after originals
    (a producer retry or a replayed batch can land long after newer messages of the same key)."""
    queues: dict[tuple[str, bytes], list[Keyed]] = defaultdict(list)
    for m in messages:
        queues[(m[0], m[1])].append(m)
    order: list[Keyed] = []
    live = [q for q in queues.values() if q]
    while live:
        queue = rng.choice(live)
        order.append(queue.pop(0))
        live = [q for q in live if q]
    for index in reversed(range(len(order))):
        if rng.random() < duplicate_rate:
            order.insert(rng.randint(index + 1, len(order)), order[index])
    return order


def apply_in_batches(
    engine: Engine, messages: list[Keyed], rng: random.Random, max_batch: int
) -> None:
    offsets: dict[str, int] = defaultdict(int)
    envelopes: list[Envelope] = []
    for topic, key, value in messages:
        msg = Message(topic=engine.settings.topic(topic), partition=0, offset=offsets[topic],
                      key=key, value=value)  # fmt: skip
        offsets[topic] += 1
        envelopes.append(engine.decode(topic, msg))
    while envelopes:
        size = rng.randint(1, max_batch)
        batch, envelopes = envelopes[:size], envelopes[size:]
        by_tenant: dict[uuid.UUID, list[Envelope]] = defaultdict(list)
        for e in batch:
            by_tenant[e.tenant_id].append(e)
        result = engine.apply(by_tenant)
        assert not result.rejected, result.rejected
        engine.run_after_commit(result)


@contextmanager
def deployment(stack: Endpoints, template: str) -> Iterator[Engine]:
    with fresh_database(stack, template) as urls:
        settings_ = Settings(database_url=urls.app_url, admin_database_url=urls.admin_url,
                             kafka_bootstrap=stack.kafka_bootstrap)  # fmt: skip
        engine = Engine(settings_)
        yield engine


def fanned_out(engine: Engine) -> int:
    """Delivery rows written by dispatch fan-outs, over every tenant."""
    assert engine.settings.admin_database_url is not None
    with db.connect(engine.settings.admin_database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM delivery_log WHERE delivery_status IN ('queued', 'suppressed')"
        ).fetchone()
    return int(row[0]) if row else 0


def digest_of(engine: Engine) -> str:
    return state_digest(engine.settings)[0]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    corpus_seed=st.integers(0, 10_000),
    order_seed=st.integers(0, 2**32),
    duplicate_rate=st.sampled_from([0.0, 0.1, 0.4]),
    max_batch=st.sampled_from([1, 7, 50, 1000]),
)
def test_any_interleaving_with_duplicates_gives_the_same_digest(
    stack: Endpoints,
    db_template: str,
    *,
    corpus_seed: int,
    order_seed: int,
    duplicate_rate: float,
    max_batch: int,
) -> None:
    c = corpus.build(
        corpus_seed, n_tenants=2, n_profiles=6, n_segments=2, n_receipts=12, with_activation=True
    )
    rng = random.Random(order_seed)
    with deployment(stack, db_template) as baseline:
        registrations, rest = encoded(baseline, c)
        apply_in_batches(baseline, registrations + rest, random.Random(0), 10_000)
        expected = digest_of(baseline)
        assert fanned_out(baseline) > 0, "the corpus must exercise snapshots and dispatch"
    with deployment(stack, db_template) as shuffled:
        # tenants exist before their traffic: registering is a precondition, not a race
        apply_in_batches(shuffled, registrations, rng, max_batch)
        apply_in_batches(shuffled, interleave(rest, rng, duplicate_rate), rng, max_batch)
        assert digest_of(shuffled) == expected
