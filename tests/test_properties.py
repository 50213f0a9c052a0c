"""Property-based: the state is a function of the topics' contents, not of their interleaving.

For random corpora (tenants, CDP profiles sealed under their data keys and memberships with
consent facts, campaigns, events, contact policies requiring consent and capping the channel,
snapshot requests, agent decisions, dispatches, receipts and profile erasures), any interleaving
across topics and partitions that keeps per-key order (the only order Kafka promises), with
random duplicates (redeliveries) and random batch boundaries, must give the digest and the dead
letters of the same corpus applied in publish order, tenant lifecycle commands (disable, enable,
rename) included.
Messages go through the real codec and the engine's real decode and apply path
against the real database; only the broker is left out, because its interleaving is exactly
what the test must control.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_activation import db
from leo_activation.consumers import HANDLERS
from leo_activation.contracts import from_json
from leo_activation.dev import corpus
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.handler import Envelope
from leo_activation.engine.loop import Engine
from leo_activation.kafka import message_key
from leo_activation.ops.digest import state_digest
from leo_activation.producers.profile_keys import KeyRing
from leo_activation.settings import Settings
from tests.fix_db import fresh_database

# on a single PostgreSQL and on Citus (tests/fix_backends.py)
pytestmark = pytest.mark.backends

Keyed = tuple[str, bytes, bytes, int]  # (logical topic, key, value, Kafka timestamp ms)
Lifecycle = list[tuple[int, str, float]]  # (tenant index, command type, where in publish order)
Erasures = list[tuple[int, int, float]]  # (tenant index, profile number, where in publish order)
Outcome = set[tuple[str, int, str]]  # dead letters: (topic, published ms, error class)


def encoded(
    engine: Engine,
    c: corpus.Corpus,
    seed: int,
    lifecycle: Lifecycle,
    erasures: Erasures,
) -> list[Keyed]:
    """The corpus as the bytes ``publish`` would produce, in publish order (the Kafka timestamps
    count up): the tenant registrations, then everything else with the drawn tenant lifecycle
    commands (disable, enable, rename) and profile erasures published at the drawn places among
    it; every profile upsert sealed by a key ring, each new data key on the keys topic just
    before it."""
    tenants = corpus.tenants(seed, 2)
    first: list[tuple[str, dict[str, object]]] = []
    rest: list[tuple[str, dict[str, object]]] = []
    for topic in ("commands", "profile-changes", "receipts"):
        for message in c.topics.get(topic, []):
            (first if message["type"] == "tenant_register" else rest).append((topic, message))
    for n, (tenant, kind, where) in enumerate(sorted(lifecycle, key=lambda x: x[2])):
        command: dict[str, object] = {"type": kind, "tenant_id": tenants[tenant],
                                      "occurred_at": f"2030-01-01T00:00:{n:02d}Z"}  # fmt: skip
        if kind == "tenant_rename":
            command["tenant_name"] = f"Renamed {n}"
        rest.insert(int(where * len(rest)), ("commands", command))
    for tenant, number, where in erasures:
        profile = corpus.seeded_uuid(seed, tenants[tenant], "profile", number)
        erase: dict[str, object] = {
            "type": "profile_erase", "tenant_id": tenants[tenant], "profile_id": profile,
            "request_ref": f"DSR-{number}", "occurred_at": "2030-02-01T00:00:00Z",
        }  # fmt: skip
        rest.insert(int(where * len(rest)), ("profile-changes", erase))
    ring = KeyRing()
    published: list[Keyed] = []
    for topic, message in first + rest:
        kind, record = from_json(topic, message)
        sealed = ring.seal_all([(kind, record)]) if topic == "profile-changes" else [
            (topic, kind, record)]  # fmt: skip
        for logical, sealed_kind, sealed_record in sealed:
            value = engine.codec.encode(sealed_kind, sealed_record)
            key = message_key(logical, sealed_record)
            published.append((logical, key, value, len(published) + 1))
    return published


def interleave(
    messages: list[Keyed], rng: random.Random, duplicate_rate: float, keys_last: bool = False
) -> list[Keyed]:
    """A random merge of the per-key sequences, then redelivered copies anywhere after originals
    (a producer retry or a replayed batch can land long after newer messages of the same key).
    ``keys_last``: the keys topic read after everything else (a rebuild that replays it last:
    every erasure is applied before the keys it destroyed arrive)."""
    queues: dict[tuple[str, bytes], list[Keyed]] = defaultdict(list)
    for m in messages:
        queues[(m[0], m[1])].append(m)
    order: list[Keyed] = []
    live = [q for q in queues.values() if q]
    while live:
        queue = rng.choice(live)
        order.append(queue.pop(0))
        live = [q for q in live if q]
    if keys_last:
        order = [m for m in order if m[0] != "profile-keys"] + [
            m for m in order if m[0] == "profile-keys"
        ]
    for index in reversed(range(len(order))):
        if rng.random() < duplicate_rate:
            order.insert(rng.randint(index + 1, len(order)), order[index])
    return order


def apply_in_batches(
    engine: Engine, messages: list[Keyed], rng: random.Random, max_batch: int
) -> Outcome:
    """Consume ``messages`` in that order, in random batches, as the engine would: a batch is
    judged against the commands not consumed yet (the horizon), and a topic whose messages wait
    is rewound to the first waiting one and read again after the next command. Returns the
    dead letters."""
    offsets: dict[str, int] = defaultdict(int)
    queue: list[Envelope] = []
    for topic, key, value, ts in messages:
        msg = Message(topic=engine.settings.topic(topic), partition=0, offset=offsets[topic],
                      key=key, value=value, timestamp=(TIMESTAMP_CREATE_TIME, ts))  # fmt: skip
        offsets[topic] += 1
        queue.append(engine.decoder.decode(topic, msg))
    dead: Outcome = set()
    while queue:
        size = rng.randint(1, max_batch)
        batch, queue = queue[:size], queue[size:]
        horizon = min((e.published_ms for e in queue if e.topic == "commands"), default=None)
        by_tenant: dict[uuid.UUID, list[Envelope]] = defaultdict(list)
        for e in batch:
            by_tenant[e.tenant_id].append(e)
        result = engine.applier.apply(by_tenant, {"commands": horizon})
        engine.applier.after_commit(result)
        rewind: dict[str, int] = {}
        for e in result.waiting:
            rewind[e.topic] = min(rewind.get(e.topic, e.offset), e.offset)
        again = [e for e in batch if e.offset >= rewind.get(e.topic, 1 << 62)]
        dead |= {(e.topic, e.published_ms, p.error_class) for e, p in result.rejected
                 if e not in again}  # fmt: skip
        if again:
            assert horizon is not None, "nothing waits once every command is consumed"
            cut = next(i for i, e in enumerate(queue) if e.topic == "commands") + 1
            moved = [e for e in queue[:cut] if e.topic in rewind]
            queue = [e for e in queue[:cut] if e.topic not in rewind] + again + moved + queue[cut:]
    return dead


@contextmanager
def deployment(stack: Endpoints, template: str) -> Iterator[Engine]:
    with fresh_database(stack, template) as urls:
        settings_ = Settings(database_url=urls.app_url, admin_database_url=urls.admin_url,
                             kafka_bootstrap=stack.kafka_bootstrap)  # fmt: skip
        engine = Engine(settings_, HANDLERS)
        yield engine


def owner_rows(engine: Engine, query: LiteralString) -> list[tuple[Any, ...]]:
    """``query``'s rows over every tenant (as the owner, whom row-level security lets see all)."""
    assert engine.settings.admin_database_url is not None
    with db.connect(engine.settings.admin_database_url) as conn:
        return conn.execute(query).fetchall()


def fanned_out(engine: Engine) -> dict[str, int]:
    """Delivery rows written by dispatch fan-outs, by outcome: queued, or the suppression's
    reason code (no_consent, frequency_cap, or other)."""
    rows = owner_rows(
        engine,
        "SELECT CASE WHEN delivery_status = 'queued' THEN 'queued' "
        "WHEN reason ~ '^(no_consent|frequency_cap):' THEN split_part(reason, ':', 1) "
        "ELSE 'other' END, count(*) FROM delivery_log "
        "WHERE delivery_status IN ('queued', 'suppressed') GROUP BY 1",
    )
    return {str(outcome): int(n) for outcome, n in rows}


def over_cap(engine: Engine) -> int:
    """Queued deliveries whose profile already had its dispatch's cap of deliveries on the
    channel within the cap's window: must be none, whatever the interleaving."""
    [(count,)] = owner_rows(
        engine,
        "SELECT count(*) FROM delivery_log l JOIN dispatch d USING (tenant_id, dispatch_id) "
        "WHERE l.delivery_status = 'queued' AND d.cap_max IS NOT NULL AND d.cap_max <= ("
        "  SELECT count(DISTINCT e.delivery_id) FROM delivery_log e "
        "  JOIN dispatch de USING (tenant_id, dispatch_id) "
        "  WHERE e.tenant_id = l.tenant_id AND e.profile_id = l.profile_id "
        "  AND e.delivery_status = 'queued' AND e.channel = l.channel "
        "  AND e.event_id <> l.event_id AND de.dispatch_seq < d.dispatch_seq "
        "  AND abs(extract(epoch FROM de.requested_at - d.requested_at)) "
        "      < extract(epoch FROM d.cap_window))",
    )
    return int(count)


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
    lifecycle=st.lists(
        st.tuples(
            st.integers(0, 1),
            st.sampled_from(["tenant_disable", "tenant_enable", "tenant_rename"]),
            st.floats(0, 1, exclude_max=True),
        ),
        max_size=4,
    ),
    erasures=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 5), st.floats(0, 1, exclude_max=True)),
        max_size=3,
    ),
    keys_last=st.booleans(),
)
def test_any_interleaving_with_duplicates_gives_the_same_digest(
    stack: Endpoints,
    db_template: str,
    *,
    corpus_seed: int,
    order_seed: int,
    duplicate_rate: float,
    max_batch: int,
    lifecycle: Lifecycle,
    erasures: Erasures,
    keys_last: bool,
) -> None:
    c = corpus.build(
        corpus_seed, n_tenants=2, n_profiles=6, n_segments=2, n_receipts=12,
        with_activation=True, with_contact_policy=True,
    )  # fmt: skip
    rng = random.Random(order_seed)
    with deployment(stack, db_template) as baseline:
        published = encoded(baseline, c, corpus_seed, lifecycle, erasures)
        expected_dead = apply_in_batches(baseline, published, random.Random(0), 10_000)
        expected = digest_of(baseline)
        if not lifecycle:
            assert not expected_dead
            outcomes = fanned_out(baseline)
            assert outcomes, "the corpus must exercise snapshots and dispatch"
            # consent decides each member; the reminder is over the cap for each one queued
            assert set(outcomes) <= {"queued", "no_consent", "frequency_cap"}, outcomes
            assert outcomes.get("queued", 0) == outcomes.get("frequency_cap", 0), outcomes
    with deployment(stack, db_template) as shuffled:
        dead = apply_in_batches(
            shuffled, interleave(published, rng, duplicate_rate, keys_last), rng, max_batch
        )
        assert dead == expected_dead
        assert digest_of(shuffled) == expected
        assert over_cap(shuffled) == 0
        assert erased_keys_left(shuffled) == 0


def erased_keys_left(engine: Engine) -> int:
    """Data keys of erased profiles still in the mirror: none, whatever order the keys and the
    erasures were read in."""
    [(count,)] = owner_rows(
        engine,
        "SELECT count(*) FROM profile_key k JOIN profile_erased_key x "
        "USING (tenant_id, profile_id, key_id)",
    )
    return int(count)
