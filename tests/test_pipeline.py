"""The pipelined engine applies a batch while it decodes the next. When the batch in flight leaves
messages waiting (their tenant's registration is not readable yet), the batch decoded meanwhile
must be dropped and read again after them: nothing lost, nothing applied twice, nothing
dead-lettered."""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from leo_activation.consumers import HANDLERS
from leo_activation.dev import corpus
from leo_activation.engine import loop as engine
from leo_activation.engine.decode import Polled
from leo_activation.engine.loop import Engine, Landed
from leo_activation.engine.stats import BatchStats
from leo_activation.settings import Settings
from tests.fix_app import publish_corpus, totals
from tests.fix_db import tenant_tx

RECEIPTS = 40


def test_a_batch_decoded_ahead_is_read_again_after_the_one_before_waits(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.with_overrides(batch_size=5)
    c = corpus.build(12, n_tenants=1, n_profiles=2, n_receipts=RECEIPTS, duplicate_rate=0)
    # The registration is published (and committed) before the receipts, but its partition lags:
    # the consumer holds the commands partitions paused until traffic has waited for it once.
    publish_corpus(settings, corpus.Corpus({"commands": c.topics["commands"]}))
    publish_corpus(settings, corpus.Corpus({"receipts": c.topics["receipts"]}))
    commands_topic = settings.topic("commands")
    held: list[Consumer] = []

    class LaggingCommands(engine.Idleness):
        def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
            super().on_assign(consumer, partitions)
            consumer.assign(partitions)
            consumer.pause([p for p in partitions if p.topic == commands_topic])
            held.append(consumer)

    monkeypatch.setattr(engine, "Idleness", LaggingCommands)
    landings: list[tuple[bool, bool]] = []  # (left messages waiting, a batch decoded ahead)
    batches: list[BatchStats] = []

    class Watched(Engine):
        def land(
            self, consumer: Consumer, batch: Polled, landed: Landed, ahead: Polled | None
        ) -> Polled | None:
            landings.append((bool(landed.waiting), ahead is not None))
            return super().land(consumer, batch, landed, ahead)

    def on_batch(stats: BatchStats) -> None:
        batches.append(stats)
        if stats.deferred and held:  # traffic has waited: the registration's partition catches up
            consumer = held.pop()
            consumer.resume([p for p in consumer.assignment() if p.topic == commands_topic])

    Watched(settings, HANDLERS, on_batch=on_batch).run(until_idle=3)

    assert (True, True) in landings, landings  # a batch waited while the next was decoded
    total = totals(batches)
    assert total.dead_lettered == 0
    assert total.duplicates == 0  # a dropped batch was never applied, so never applied twice
    assert total.applied == RECEIPTS + len(c.topics["commands"])
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, corpus.tenants(12, 1)[0]):
        row = conn.execute("SELECT count(*) FROM delivery_log").fetchone()
    assert row == (RECEIPTS,)


def test_the_loop_tunes_the_interpreter_while_it_runs_and_puts_it_back(settings: Settings) -> None:
    """The loop shortens the GIL's switch interval and holds two batches in the collector's young
    generation (else it runs every few hundred messages over both batches for no garbage); a
    process that embeds the engine gets both back as they were once it returns."""
    c = corpus.build(13, n_tenants=1, n_profiles=2, n_receipts=RECEIPTS, duplicate_rate=0)
    publish_corpus(settings, c)
    before = (sys.getswitchinterval(), gc.get_threshold())
    during: list[tuple[float, tuple[int, int, int]]] = []
    batches: list[BatchStats] = []

    def on_batch(stats: BatchStats) -> None:
        batches.append(stats)
        during.append((sys.getswitchinterval(), gc.get_threshold()))

    Engine(settings, HANDLERS, on_batch=on_batch).run(until_idle=2)

    total = totals(batches)
    assert total.applied == total.consumed >= c.count()  # (publish adds the profiles' keys)
    young = engine.YOUNG_OBJECTS_PER_MESSAGE * settings.batch_size
    tuned = (engine.GIL_SWITCH_INTERVAL_S, (max(young, before[1][0]), *before[1][1:]))
    assert during
    assert set(during) == {tuned}
    assert (sys.getswitchinterval(), gc.get_threshold()) == before


@pytest.mark.parametrize("at_once", [1, 3])
def test_a_batch_applies_its_tenants_as_many_at_once_as_configured(
    settings: Settings, at_once: int
) -> None:
    """``LEO_TENANTS_AT_ONCE`` tenant transactions run side by side, each on a connection of its
    own: more keep PostgreSQL busy while the consumer runs Python, and each is a connection an
    operator sizes ``max_connections`` for."""
    c = corpus.build(14, n_tenants=5, n_profiles=2, n_receipts=RECEIPTS, duplicate_rate=0)
    publish_corpus(settings, c)
    lock = threading.Lock()
    running: list[int] = []  # the backends of the tenant transactions applying right now
    most, backends = 0, set()

    class Observed:
        """A handler that notes which transactions apply at the same time as it does."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def apply(self, conn: psycopg.Connection[Any], tenant_id: Any, batch: Any) -> Any:
            nonlocal most
            with lock:
                running.append(conn.info.backend_pid)
                most = max(most, len(running))
                backends.add(conn.info.backend_pid)
            try:
                time.sleep(0.05)  # long enough for the batch's other tenants to start meanwhile
                return self.inner.apply(conn, tenant_id, batch)
            finally:
                with lock:
                    running.remove(conn.info.backend_pid)

    batches: list[BatchStats] = []
    handlers: list[Any] = [Observed(h) for h in HANDLERS]
    # a poll long enough to gather every tenant's messages into the first batch
    configured = settings.with_overrides(tenants_at_once=at_once, batch_timeout_s=2.0)
    Engine(configured, handlers, on_batch=batches.append).run(until_idle=2)

    total = totals(batches)
    assert total.applied == total.consumed >= c.count()
    assert max(b.tenants for b in batches) == 5
    assert most == at_once
    assert len(backends) == at_once
