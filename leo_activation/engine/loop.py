"""The consumer loop every input topic shares.

One batch, in order:

1. poll a batch (auto-commit and auto offset store are off);
2. decode and validate each message (``decode``); a bad one becomes a dead letter, the rest go on;
3. apply, one database transaction per tenant in which each topic's handler applies its
   messages set-based (``apply``: retries, bisection; no Kafka);
4. in one Kafka transaction: the dead letters, the records handlers emitted and the batch's
   offsets (``commit``) — so offsets are committed only after the database committed, and
   outputs are produced exactly when offsets are.

A crash anywhere replays the batch from the last committed offsets; the handlers are idempotent
(deterministic keys, ``ON CONFLICT``), so a replayed message counts as a duplicate, never twice.

Steps 3-4 of a batch run in a worker thread while the main thread decodes the next batch: the
worker mostly waits on PostgreSQL and the broker (those waits release the GIL), so decoding
overlaps them. The poll itself runs with nothing in flight, so a rebalance never meets a batch
half-committed; it drops the batch decoded ahead, which nothing has applied. If a batch did not
commit, the batch decoded meanwhile is dropped too and both are read again; if it left messages
waiting (``waiting``), their partitions are paused at the first waiting offset and only their
messages are dropped from the batch ahead: the effects are exactly those of one batch at a time,
in order.
"""

from __future__ import annotations

import functools
import gc
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from leo_activation.codec import make_codec
from leo_activation.engine.apply import Applied, TenantApplier
from leo_activation.engine.commit import Committer
from leo_activation.engine.decode import Coords, Decoder, Partition, Polled, Span
from leo_activation.engine.handler import Connection, Emit, Handler, Outgoing
from leo_activation.engine.stats import BatchStats
from leo_activation.engine.waiting import (
    OpenTransactions,
    Waiting,
    coords,
    partition_of,
)
from leo_activation.errors import LeoError
from leo_activation.kafka import consumer_config, ensure_topics
from leo_activation.producers.dead_letters import DeadLetter
from leo_activation.settings import Settings

log = logging.getLogger(__name__)

# While the main thread decodes, the apply worker gets the GIL back after each of its many short
# waits on PostgreSQL only when the decoder yields it: after CPython's switch interval (5 ms by
# default), so a tenant transaction of several round trips would wait for nothing. 0.5 ms keeps
# those hand-overs short.
GIL_SWITCH_INTERVAL_S = 0.0005

# A batch's envelopes, rows and keys live until it commits while the next batch is decoded: some
# ten objects the cyclic collector tracks a message. With the default young generation (700
# objects) it ran every few hundred messages, and its older generations over both batches, to
# find no garbage: reference counting frees all of it. The young generation holds two batches.
YOUNG_OBJECTS_PER_MESSAGE = 10


@dataclass
class Landed:
    """What steps 3-4 of a batch came to."""

    committed: bool  # False: the Kafka transaction aborted, the batch is read again
    waiting: dict[Partition, int]  # partition -> first offset waiting
    stats: BatchStats
    dead: list[DeadLetter]
    deferred: set[Coords] = field(default_factory=set)  # physical topic, partition, offset


class Idleness:
    """When ``run(until_idle=...)`` is done: no message for that long since the first assignment,
    the group's offsets readable (blocked on them is not idle), and nothing written behind an
    open transaction (it will be read once that ends)."""

    def __init__(self, until_idle: float | None, open_transactions: OpenTransactions) -> None:
        self.until_idle = until_idle
        self.open_transactions = open_transactions
        self.assigned = self.blocked = False
        self.last_message = time.monotonic()

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self.assigned:  # idle time counts from the first assignment, not from start-up
            self.assigned, self.last_message = True, time.monotonic()

    def busy(self) -> None:
        self.blocked, self.last_message = False, time.monotonic()

    def over(self, consumer: Consumer) -> bool:
        idle = time.monotonic() - self.last_message
        if self.until_idle is None or not self.assigned or idle < self.until_idle:
            return False
        readable = _offsets_readable(consumer)
        if readable and not self.blocked:
            self.open_transactions.check(consumer, now=True)
            if not self.open_transactions.pending:
                return True
        # blocked is not idle; once unblocked, wait a whole idle period again
        self.blocked, self.last_message = not readable, time.monotonic()
        return False


class Engine:
    """Consumes ``topics`` (default: every handler's) through ``handlers``, which a tenant's
    transaction applies in the order given."""

    def __init__(
        self,
        settings: Settings,
        handlers: Sequence[Handler],
        *,
        topics: Sequence[str] | None = None,
        group: str | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.logical_topics = list(topics or [h.topic for h in handlers])
        self.group = group or settings.group_id
        self.codec = make_codec(settings)
        self.on_batch = on_batch
        self.on_idle = on_idle  # after a poll that returned nothing
        self.on_retry = on_retry  # "db" or "kafka", each time a transient fault is retried
        self.logical_by_physical = {settings.topic(t): t for t in self.logical_topics}
        self.decoder = Decoder(self.codec, handlers, self.logical_by_physical, self.group)
        self.applier = TenantApplier(settings, handlers, on_retry)
        self.waiting = Waiting(settings, handlers, self.group)
        self.open_transactions = OpenTransactions(settings, self.logical_by_physical)
        self.consumer: Consumer | None = None  # while run() runs
        self._ahead: Polled | None = None  # polled and decoded, not applied yet

    # ------------------------------------------------------------------ lifecycle
    @property
    def stopping(self) -> bool:
        return self.applier.stopping

    def request_stop(self, *_: object) -> None:
        self.applier.stopping = True

    def run(self, until_idle: float | None = None) -> None:
        self.applier.check()  # before any Kafka client: a refused database stops at once
        ensure_topics(self.settings)
        consumer = Consumer(consumer_config(self.settings, self.group))
        committer = Committer(self.settings, self.codec, self.group, self.on_retry)
        worker = ThreadPoolExecutor(1, thread_name_prefix="leo-apply")
        flight: Future[Landed] | None = None
        idleness = Idleness(until_idle, self.open_transactions)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            self.waiting.forget()
            # a partition paused before the rebalance must not stay paused now that nothing
            # remembers it: it would never be read again
            c.resume(partitions)
            idleness.on_assign(c, partitions)

        consumer.subscribe(
            list(self.logical_by_physical), on_assign=on_assign, on_revoke=self._on_revoke
        )
        self.consumer = consumer
        restore_interpreter = _tune_interpreter(self.settings.batch_size)
        try:
            while not self.stopping:
                # 1. poll: nothing is in flight, so a rebalance may run in here
                timeout = 0 if self._ahead is not None else self.settings.batch_timeout_s
                messages = [
                    m
                    for m in consumer.consume(self.settings.batch_size, timeout)
                    if is_message(m) and partition_of(m) not in self.waiting.paused
                ]
                ready, self._ahead = self._ahead, None
                if ready is None:
                    # 2. decode and validate
                    self._ahead = self._decode(messages)
                else:
                    # 3. apply and 4. commit the batch polled before, in the worker, while
                    # 2. this one is decoded
                    flight = worker.submit(self._apply_and_commit, consumer, committer, ready)
                    polled = self._decode(messages)
                    landed = flight.result()  # re-raises what failed in the worker
                    flight = None
                    self._ahead = self.land(consumer, ready, landed, polled)
                self.open_transactions.check(consumer)
                if messages or ready is not None:
                    idleness.busy()
                    continue
                if self.waiting.paused:  # nothing else to read: what waits is judged again
                    self.waiting.resume(consumer)
                    idleness.busy()
                    continue
                if self.on_idle is not None:
                    self.on_idle()
                if idleness.over(consumer):
                    return
        finally:
            if flight is not None:  # failing: let the worker finish with the connections
                wait([flight])
            worker.shutdown()
            restore_interpreter()
            self._ahead = None  # decoded, not applied: read again from the committed offsets
            self.consumer = None
            consumer.close()
            self.waiting.close()
            self.applier.close()

    def lag(self) -> Iterator[tuple[str, int, int]]:
        """(logical topic, partition, high watermark - position) per partition assigned and
        fetched from, from the consumer's cached watermarks; nothing while not running."""
        consumer = self.consumer
        if consumer is None:
            return
        assignment = consumer.assignment()
        if not assignment:
            return
        for tp in consumer.position(assignment):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset == OFFSET_INVALID or high is None or high < 0:
                continue  # nothing fetched yet on this partition
            topic = self.logical_by_physical.get(tp.topic, tp.topic)
            yield topic, tp.partition, max(0, high - tp.offset)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # nothing of the batch ahead is applied: the partitions' next owner reads it again
        self._ahead = None
        self.waiting.forget()

    def _decode(self, messages: list[Message]) -> Polled | None:
        return self.decoder.decode_batch(messages) if messages else None

    # ------------------------------------------------------------------ one batch
    def _apply_and_commit(self, consumer: Consumer, committer: Committer, polled: Polled) -> Landed:
        """Steps 3-4 of a batch (in the worker thread)."""
        # 3. apply, one database transaction per tenant
        started = time.monotonic()
        reread = self.waiting.skip_reread(polled)
        result = self.applier.apply(polled.by_tenant, self.waiting.horizons(polled))
        waiting = self._waiting_offsets(polled, result)
        dead = polled.dead + [
            self.decoder.dead_letter(
                polled.message(e), e.topic, error, str(e.tenant_id), e.correlation_id
            )
            for e, error in result.rejected
        ]
        # decoded or applied, a message at or after a waiting offset is read and judged again:
        # dead-lettering it now too would dead-letter it twice
        deferred = [d for d in dead if _at_or_after(d.source, waiting)]
        dead = [d for d in dead if d not in deferred]
        deferred_coords = {d.source for d in deferred} | {
            coords(polled.message(e)) for e in result.waiting
        }
        stats = self._batch_stats(polled, result, dead, deferred_coords)
        stats.reread = reread
        stats.tenants, stats.db_seconds = len(polled.by_tenant), time.monotonic() - started
        # 4. dead letters, emitted records and offsets in one Kafka transaction
        committed = committer.commit(
            consumer,
            offsets=_next_offsets(polled.spans, waiting),
            dead=dead,
            outputs=[functools.partial(self._read_back, emit) for emit in result.of(Emit)],
        )
        if committed:
            self.applier.after_commit(result)
        return Landed(committed, waiting, stats, dead, deferred_coords)

    def _read_back(self, emit: Callable[[Connection], Iterator[Outgoing]]) -> Iterator[Outgoing]:
        return emit(self.applier.connection())

    def land(
        self, consumer: Consumer, batch: Polled, landed: Landed, ahead: Polled | None
    ) -> Polled | None:
        """Report a batch that went through steps 3-4; return what of ``ahead``, the batch
        decoded meanwhile, may go on. A batch that did not commit is read again with all of
        ``ahead``. Partitions left waiting are paused at their first waiting offset and only
        their messages are dropped from ``ahead``: the rest (the upstream messages they wait for
        among them) go on, so waiting never starves what it waits for."""
        if not landed.committed:
            again = {key: span.first for key, span in batch.spans.items()}
            if ahead is not None:
                for key, span in ahead.spans.items():
                    again[key] = min(again.get(key, span.first), span.first)
            for (topic, partition), offset in again.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            return None
        self._report(landed.stats, landed.dead)
        self.waiting.settled(batch, landed.deferred)
        if landed.waiting:
            self.waiting.pause(consumer, landed.waiting)
        elif self.waiting.paused and self.waiting.upstream_applied(batch.spans):
            self.waiting.resume(consumer)  # what waits may be decided now
        if ahead is None or not landed.waiting:
            return ahead
        kept = [m for m in ahead.messages if partition_of(m) not in landed.waiting]
        if len(kept) == len(ahead.messages):
            return ahead
        return self._decode(kept)

    def _waiting_offsets(self, polled: Polled, result: Applied) -> dict[Partition, int]:
        """Partition -> first offset of the messages a gate held back: they are read and judged
        again."""
        waiting: dict[Partition, int] = {}
        for e in result.waiting:
            m = polled.message(e)
            key = partition_of(m)
            waiting[key] = min(waiting.get(key, 1 << 62), int(m.offset() or 0))
        if waiting:
            log.info("%d messages wait for upstream messages published before them",
                     len(result.waiting))  # fmt: skip
        return waiting

    def _batch_stats(
        self,
        polled: Polled,
        result: Applied,
        dead: list[DeadLetter],
        deferred: set[Coords],
    ) -> BatchStats:
        stats = BatchStats(
            applied=result.applied,
            duplicates=result.duplicates,
            dead_lettered=len(dead),
            deferred=len(deferred),
        )
        self.waiting.count_reads(stats, polled, self.logical_by_physical)
        for topic, _, _ in deferred:
            stats.topic(self.logical_by_physical[topic]).deferred += 1
        for logical, counts in result.by_topic.items():
            stats.topic(logical).applied, stats.topic(logical).duplicates = (
                counts.applied, counts.duplicates,
            )  # fmt: skip
        for d in dead:
            stats.topic(str(d.logical_topic)).dead_lettered += 1
        return stats

    def _report(self, stats: BatchStats, dead: list[DeadLetter]) -> None:
        for d in dead:
            _, partition, offset = d.source
            log.warning(
                "dead-lettered %s/%d@%d: %s: %s", d.logical_topic, partition, offset,
                d.error_class, d.reason,
                extra={
                    "event": "dead_letter", "topic": d.logical_topic, "partition": partition,
                    "offset": offset, "error_class": d.error_class, "tenant_id": d.tenant_id,
                    "correlation_id": d.correlation_id,
                },
            )  # fmt: skip
        if not stats.balanced():
            log.error("accounting mismatch: %s", stats)
        log.info("batch", extra={"event": "batch", **asdict(stats), "group": self.group})
        if self.on_batch is not None:
            self.on_batch(stats)


# Consumer errors that retrying cannot cure: the cluster refuses the group or a topic, or a topic
# is gone. librdkafka reports every other one (a broker or the group coordinator away, the group's
# offsets not fetched during a rebalance) and recovers by itself.
_CONSUMER_STOPS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    }
)


def _tune_interpreter(batch_size: int) -> Callable[[], None]:
    """Set the GIL's switch interval and the collector's young generation for the loop; return
    what puts both back."""
    switch_interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    young = max(thresholds[0], YOUNG_OBJECTS_PER_MESSAGE * batch_size)
    gc.set_threshold(young, *thresholds[1:])

    def restore() -> None:
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*thresholds)

    return restore


def is_message(msg: Message) -> bool:
    """Whether what the consumer returned is a message. Its error events are not: the end of a
    partition is skipped, an error librdkafka recovers from is logged and consumption goes on,
    and one it cannot recover from stops the consumer."""
    error = msg.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    if error.fatal() or error.code() in _CONSUMER_STOPS:
        raise LeoError(f"Kafka consumer error: {error.str()}")
    log.warning("Kafka consumer: %s; librdkafka retries", error.str())
    return False


def _offsets_readable(consumer: Consumer) -> bool:
    """False while the group's committed offsets cannot be read: after a consumer died inside its
    Kafka transaction the broker answers UNSTABLE_OFFSET_COMMIT until that transaction is aborted,
    and nothing is fetched meanwhile. That is not idleness."""
    assignment = consumer.assignment()
    if not assignment:
        return True
    try:
        consumer.committed(assignment, timeout=5)
    except KafkaException as exc:
        log.warning("committed offsets not readable yet (%s); waiting", exc)
        return False
    return True


def _next_offsets(
    spans: dict[Partition, Span], waiting: dict[Partition, int] | None = None
) -> list[TopicPartition]:
    """The offsets to commit: past the batch, but not past a partition's first waiting message."""
    committed = {key: span.last + 1 for key, span in spans.items()} | (waiting or {})
    return [TopicPartition(t, p, o) for (t, p), o in sorted(committed.items())]


def _at_or_after(source: Coords, waiting: dict[Partition, int]) -> bool:
    first = waiting.get(source[:2])
    return first is not None and source[2] >= first
