"""The consumer engine every input topic shares.

One batch, in order:

1. poll a batch (auto-commit and auto offset store are off);
2. decode and validate each message; a bad one becomes a dead letter, the rest go on;
3. group by tenant; per tenant, one database transaction as the application role with the tenant
   set by ``SET LOCAL`` semantics, in which each topic's handler applies its messages set-based;
   a transient database fault is retried with backoff (never dead-lettered), a data error is
   narrowed down to the message that caused it, which is dead-lettered;
4. in one Kafka transaction: the dead letters, the messages handlers emitted (delivery requests)
   and the batch's offsets — so offsets are committed only after the database committed, and
   outputs are produced exactly when offsets are.

A crash anywhere replays the batch from the last committed offsets; the handlers are idempotent
(deterministic keys, ``ON CONFLICT``), so a replayed message counts as a duplicate, never twice.

Steps 3-4 of a batch run in a worker thread while the main thread decodes the next batch: the
worker mostly waits on PostgreSQL and the broker (those waits release the GIL), so decoding
overlaps them. The poll itself runs with nothing in flight, so a rebalance never meets a batch
half-committed; it drops the batch decoded ahead, which nothing has applied. If a batch did not
commit, the batch decoded meanwhile is dropped too and both are read again; if it left messages
waiting, their partitions are paused at the first waiting offset and only their messages are
dropped from the batch ahead: the effects are exactly those of one batch at a time, in order.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any, TypeVar

import psycopg
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

from leo_activation import contracts, db
from leo_activation.codec import make_codec
from leo_activation.consumers import tenancy
from leo_activation.consumers.commands import CommandsHandler
from leo_activation.consumers.profile_changes import ProfileChangesHandler
from leo_activation.consumers.receipts import ReceiptsHandler
from leo_activation.engine.handler import (
    ApplyContext,
    ApplyResult,
    Envelope,
    Handler,
    Outgoing,
    OutgoingStream,
)
from leo_activation.errors import LeoError, PoisonMessage, first_line
from leo_activation.kafka import INPUT_TOPICS, consumer_config, ensure_topics, reader
from leo_activation.producers import TopicProducer
from leo_activation.producers.dead_letters import DeadLetter
from leo_activation.settings import Settings

log = logging.getLogger("leo_activation.engine.loop")
PROBE_TIMEOUT_S = 10.0
T = TypeVar("T")

CORRELATION_HEADER = "leo.correlation_id"
# The engine's transactions only carry one batch's outputs and offsets (seconds at most). If the
# process dies inside one, the broker aborts it after this long; until then the group's offsets
# for its partitions are unreadable and a restarted consumer waits (the producers' default of
# 15 minutes, sized for large ``publish`` transactions, would stall recovery that long).
TRANSACTION_TIMEOUT_MS = 60_000
SEND_OFFSETS_TIMEOUT_S = 30
# While the main thread decodes, the apply worker gets the GIL back after each of its many short
# waits on PostgreSQL only when the decoder yields it: after CPython's switch interval (5 ms by
# default), so a tenant transaction of ~7 round trips could wait ~20 ms for nothing. 0.5 ms
# keeps those hand-overs short (receipts end to end 18.9k -> 21.5k msg/s, same corpus and machine).
GIL_SWITCH_INTERVAL_S = 0.0005


def default_handlers() -> list[Handler]:
    """Handlers in the order a tenant's transaction applies them: commands first, so a tenant
    registered in the batch exists for its other messages."""
    return [CommandsHandler(), ProfileChangesHandler(), ReceiptsHandler()]


@dataclass
class TopicCounts:
    """One logical topic's share of a batch."""

    consumed: int = 0  # read for the first time
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deferred: int = 0  # waiting: settled when read again
    resumed: int = 0  # deferred before, read again and settled (or deferred) now

    def balanced(self) -> bool:
        return self.consumed + self.resumed == (
            self.applied + self.duplicates + self.dead_lettered + self.deferred
        )


@dataclass
class BatchStats:
    consumed: int = 0  # distinct offsets: a message read again is not consumed again
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deferred: int = 0  # left uncommitted, read again later (Engine._settle_unregistered)
    resumed: int = 0  # deferred by an earlier batch, read again here
    # read again behind a waiting offset though already settled: skipped, counted nowhere else
    reread: int = 0
    tenants: int = 0
    db_seconds: float = 0.0
    topics: dict[str, TopicCounts] = field(default_factory=dict)  # per logical topic

    def balanced(self) -> bool:
        """The accounting invariant: every consumed message is accounted for exactly once (over a
        run, the deferred ones are the ones resumed later)."""
        return self.consumed + self.resumed == (
            self.applied + self.duplicates + self.dead_lettered + self.deferred
        )


Coords = tuple[str, int, int]  # logical topic, partition, offset


@dataclass
class Polled:
    """A polled batch after step 2: its envelopes by tenant, and what is already dead."""

    messages: list[Message]
    by_tenant: dict[uuid.UUID, list[Envelope]]
    dead: list[DeadLetter]
    raw: dict[Coords, Message]


@dataclass
class Landed:
    """What steps 3-4 of a batch came to."""

    committed: bool  # False: the Kafka transaction aborted, the batch is read again
    waiting: dict[tuple[str, int], int]  # partition -> first offset waiting for its tenant
    stats: BatchStats
    dead: list[DeadLetter]
    deferred: set[Coords] = field(default_factory=set)  # physical topic, partition, offset


class _Idleness:
    """When ``run(until_idle=...)`` is done: no message for that long since the first assignment,
    and the group's offsets readable (blocked on them is not idle)."""

    def __init__(self, until_idle: float | None) -> None:
        self.until_idle = until_idle
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
            return True
        # blocked is not idle; once unblocked, wait a whole idle period again
        self.blocked, self.last_message = not readable, time.monotonic()
        return False


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str] = INPUT_TOPICS,
        group: str | None = None,
        handlers: Sequence[Handler] | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.logical_topics = list(topics)
        self.group = group or settings.group_id
        self.handlers = list(handlers or default_handlers())
        self.handler_by_topic = {h.topic: h for h in self.handlers}
        self.codec = make_codec(settings.schema_registry_url)
        self.ctx = ApplyContext(settings, self.codec)
        self.on_batch = on_batch
        self.on_idle = on_idle  # after a poll that returned nothing
        self.on_retry = on_retry  # "db" or "kafka", each time a transient fault is retried
        self.consumer: Consumer | None = None  # while run() runs (metrics read lag from it)
        self.stopping = False
        self._wedged: list[Producer] = []  # producers whose API call hung (see _send_offsets)
        self._conn: psycopg.Connection[Any] | None = None  # used by the worker thread only
        self._ahead: Polled | None = None  # polled and decoded, not applied yet
        self._physical_to_logical = {settings.topic(t): t for t in self.logical_topics}
        # Waiting partitions are paused at their first waiting offset (partition -> offset) so the
        # commands they wait for keep flowing; resumed once commands were applied, or when
        # nothing else is left to read. librdkafka clears pauses on a rebalance, and so do we.
        self._paused: dict[tuple[str, int], int] = {}
        # What this assignment has counted: per partition the offset after the highest one read,
        # and the messages deferred (read again and settled later). Behind a waiting offset, the
        # rest were settled and committed to the database already, so reading them again is
        # neither consumption nor duplication. A rebalance forgets it (the next read is a replay).
        self._seen: dict[tuple[str, int], int] = {}
        self._deferred: set[Coords] = set()
        self._first_ms: dict[tuple[int, int], int] = {}  # commands (partition, offset) -> timestamp

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def run(self, until_idle: float | None = None) -> None:
        ensure_topics(self.settings)
        consumer = Consumer(consumer_config(self.settings, self.group))
        out = self._transactional_producer()
        worker = ThreadPoolExecutor(1, thread_name_prefix="leo-apply")
        flight: Future[Landed] | None = None
        idleness = _Idleness(until_idle)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._forget()
            # a partition paused before the rebalance must not stay paused now that nothing
            # remembers it: it would never be read again
            c.resume(partitions)
            idleness.on_assign(c, partitions)

        consumer.subscribe(
            list(self._physical_to_logical), on_assign=on_assign, on_revoke=self._on_revoke
        )
        self.consumer = consumer
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            while not self.stopping:
                # 1. poll: nothing is in flight, so a rebalance may run in here
                timeout = 0 if self._ahead is not None else self.settings.batch_timeout_s
                messages = consumer.consume(self.settings.batch_size, timeout)
                messages = [
                    m for m in messages if not _is_partition_eof(m) and _key(m) not in self._paused
                ]
                ready, self._ahead = self._ahead, None
                if ready is None:
                    # 2. decode and validate
                    self._ahead = self._decode_batch(messages) if messages else None
                else:
                    # 3. apply and 4. commit the batch polled before, in the worker, while
                    # 2. this one is decoded
                    flight = worker.submit(self._apply_and_commit, consumer, out, ready)
                    polled = self._decode_batch(messages) if messages else None
                    landed = flight.result()  # re-raises what failed in the worker
                    flight = None
                    self._ahead = self._land(consumer, ready, landed, polled)
                if messages or ready is not None:
                    idleness.busy()
                    continue
                if self._paused:  # nothing else to read: what waits is judged again
                    self._resume(consumer)
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
            sys.setswitchinterval(switch_interval)
            self._ahead = None  # decoded, not applied: read again from the committed offsets
            self.consumer = None
            consumer.close()
            if self._conn is not None:
                self._conn.close()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # nothing of the batch ahead is applied: the partitions' next owner reads it again
        self._ahead = None
        self._forget()

    def _forget(self) -> None:
        self._paused, self._seen, self._deferred = {}, {}, set()

    # ------------------------------------------------------------------ one batch
    def _apply_and_commit(self, consumer: Consumer, out: TopicProducer, polled: Polled) -> Landed:
        """Steps 3-4 of a batch (in the worker thread)."""
        # 3. apply, one database transaction per tenant
        started = time.monotonic()
        reread = self._skip_reread(polled)
        result = self.apply(polled.by_tenant, self._unread_commands_before(consumer, polled))
        waiting = self._settle_unregistered(consumer, polled.raw, result)
        dead = polled.dead + [
            self._dead_letter(polled.raw[(e.topic, e.partition, e.offset)], e.topic, error,
                              str(e.tenant_id), e.correlation_id)
            for e, error in result.rejected
        ]  # fmt: skip
        # decoded or applied, a message at or after a waiting offset is read and judged again:
        # dead-lettering it now too would dead-letter it twice
        deferred = [d for d in dead if _at_or_after(d.source, waiting)]
        dead = [d for d in dead if d not in deferred]
        deferred_coords = {d.source for d in deferred} | {
            _coords(polled.raw[(e.topic, e.partition, e.offset)]) for e in result.unregistered
        }
        stats = self._batch_stats(polled.messages, result, dead, deferred_coords)
        stats.reread = reread
        stats.tenants, stats.db_seconds = len(polled.by_tenant), time.monotonic() - started
        # 4. dead letters, emitted messages and offsets in one Kafka transaction
        offsets = _next_offsets(polled.messages, waiting)
        streams = result.streams.values()
        if not self._commit(
            consumer, out, offsets=offsets, dead=dead, outgoing=result.outgoing, streams=streams
        ):
            return Landed(False, waiting, stats, dead, deferred_coords)
        self.run_after_commit(result)
        return Landed(True, waiting, stats, dead, deferred_coords)

    def _land(
        self, consumer: Consumer, batch: Polled, landed: Landed, ahead: Polled | None
    ) -> Polled | None:
        """Report a batch that went through steps 3-4; return what of ``ahead``, the batch
        decoded meanwhile, may go on. A batch that did not commit is read again with all of
        ``ahead``. Partitions left waiting are paused at their first waiting offset and only
        their messages are dropped from ``ahead``: the rest (the commands they wait for among
        them) go on, so waiting never starves what it waits for."""
        if not landed.committed:
            again = _first_offsets(batch.messages)
            if ahead is not None:
                for key, offset in _first_offsets(ahead.messages).items():
                    again[key] = min(again.get(key, offset), offset)
            _seek(consumer, again)
            return None
        self._report(landed.stats, landed.dead)
        for m in batch.messages:
            key = _key(m)
            self._seen[key] = max(self._seen.get(key, 0), int(m.offset() or 0) + 1)
        self._deferred -= {_coords(m) for m in batch.messages}
        self._deferred |= landed.deferred
        commands = self.settings.topic("commands")
        if landed.waiting:
            self._pause(consumer, landed.waiting)
        elif self._paused and any(str(m.topic()) == commands for m in batch.messages):
            self._resume(consumer)  # commands were applied: what waits may be decided now
        if ahead is None or not landed.waiting:
            return ahead
        kept = [m for m in ahead.messages if _key(m) not in landed.waiting]
        if len(kept) == len(ahead.messages):
            return ahead
        return self._decode_batch(kept) if kept else None

    def _pause(self, consumer: Consumer, waiting: dict[tuple[str, int], int]) -> None:
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(waiting.items())]
        consumer.pause(partitions)
        for tp in partitions:  # also drops what was fetched past it
            consumer.seek(tp)
        self._paused.update(waiting)
        log.info("paused %d partitions waiting for commands", len(partitions))

    def _resume(self, consumer: Consumer) -> None:
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(self._paused.items())]
        self._paused = {}
        consumer.resume(partitions)

    def _skip_reread(self, polled: Polled) -> int:
        """Take out of ``polled`` what is read again behind a waiting offset though this
        assignment settled it already (applied or judged a duplicate, its database transaction
        and outputs committed); return how many."""
        if not self._seen:
            return 0

        def again(coords: Coords) -> bool:
            seen = self._seen.get(coords[:2])
            return seen is not None and coords[2] < seen and (coords not in self._deferred)

        skipped = 0
        for tenant, envelopes in list(polled.by_tenant.items()):
            kept = [
                e
                for e in envelopes
                if not again(_coords(polled.raw[(e.topic, e.partition, e.offset)]))
            ]
            skipped += len(envelopes) - len(kept)
            if kept:
                polled.by_tenant[tenant] = kept
            else:
                del polled.by_tenant[tenant]
        dead = [d for d in polled.dead if not again(d.source)]
        skipped += len(polled.dead) - len(dead)
        polled.dead = dead
        return skipped

    def _decode_batch(self, messages: list[Message]) -> Polled:
        by_tenant: dict[uuid.UUID, list[Envelope]] = defaultdict(list)
        dead: list[DeadLetter] = []
        raw: dict[Coords, Message] = {}
        for msg in messages:
            if msg.error() is not None:
                raise LeoError(f"Kafka consumer error: {msg.error()}")
            logical = self._physical_to_logical[str(msg.topic())]
            try:
                envelope = self.decode(logical, msg)
            except PoisonMessage as poison:
                dead.append(self._dead_letter(msg, logical, poison, None, _header_correlation(msg)))
                continue
            raw[(logical, envelope.partition, envelope.offset)] = msg
            by_tenant[envelope.tenant_id].append(envelope)
        return Polled(messages, by_tenant, dead, raw)

    def _dead_letter(
        self,
        msg: Message,
        logical: str,
        error: PoisonMessage,
        tenant: str | None,
        correlation_id: str | None,
    ) -> DeadLetter:
        return DeadLetter.of(
            msg, logical_topic=logical, error=error, tenant_id=tenant, group=self.group,
            correlation_id=correlation_id,
        )  # fmt: skip

    def _batch_stats(
        self,
        messages: list[Message],
        result: ApplyResult,
        dead: list[DeadLetter],
        deferred: set[Coords],
    ) -> BatchStats:
        stats = BatchStats(
            applied=result.applied,
            duplicates=result.duplicates,
            dead_lettered=len(dead),
            deferred=len(deferred),
        )
        for msg in messages:
            logical = self._physical_to_logical[str(msg.topic())]
            counts = stats.topics.setdefault(logical, TopicCounts())
            seen = self._seen.get(_key(msg))
            if _coords(msg) in self._deferred:
                stats.resumed += 1
                counts.resumed += 1
            elif seen is None or int(msg.offset() or 0) >= seen:
                stats.consumed += 1
                counts.consumed += 1
            if _coords(msg) in deferred:
                counts.deferred += 1
        for logical, (applied, duplicates) in result.by_topic.items():
            counts = stats.topics.setdefault(logical, TopicCounts())
            counts.applied, counts.duplicates = applied, duplicates
        for d in dead:
            stats.topics.setdefault(str(d.logical_topic), TopicCounts()).dead_lettered += 1
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

    def _settle_unregistered(
        self,
        consumer: Consumer,
        raw: dict[Coords, Message],
        result: ApplyResult,
    ) -> dict[tuple[str, int], int]:
        """Partition -> first offset of the messages that wait for unread commands published at or
        before them (consumers/tenancy.py decided which): they are read and judged again."""
        waiting: dict[tuple[str, int], int] = {}
        for e in result.unregistered:
            m = raw[(e.topic, e.partition, e.offset)]
            key = (str(m.topic()), int(m.partition() or 0))
            waiting[key] = min(waiting.get(key, 1 << 62), int(m.offset() or 0))
        if waiting:
            log.info(
                "%d messages wait for commands published before them", len(result.unregistered)
            )
        return waiting

    def _unread_commands_before(self, consumer: Consumer, polled: Polled) -> int | None:
        """The Kafka timestamp of the earliest command the group has not read yet (this batch's
        commands count as read: they are applied first), or None if there is none. Once a batch,
        and only for a batch with tenant-scoped messages; a partition whose committed offset is
        at its high watermark costs no read."""
        scoped = {h.topic for h in self.handlers if h.requires_active_tenant}
        if not any(e.topic in scoped for batch in polled.by_tenant.values() for e in batch):
            return None
        topic = self.settings.topic("commands")
        read: dict[int, int] = {}
        for m in polled.messages:
            if str(m.topic()) == topic:
                p = int(m.partition() or 0)
                read[p] = max(read.get(p, 0), int(m.offset() or 0) + 1)
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        starts = []
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            start = max(tp.offset, low, read.get(tp.partition, 0))
            if start < high:  # maybe only a transaction marker: look at what is readable
                starts.append(TopicPartition(topic, tp.partition, start))
        return _first_readable_ms(self.settings, starts, self._first_ms) if starts else None

    def apply(
        self, by_tenant: dict[uuid.UUID, list[Envelope]], horizon_ms: int | None = None
    ) -> ApplyResult:
        """Apply decoded envelopes, one database transaction per tenant (in tenant-id order), then
        the follow-ups they asked for (each in its own transaction). ``horizon_ms``: the earliest
        unread command's timestamp; tenant-scoped messages published at or after it wait."""
        result = ApplyResult()
        for tenant_id in sorted(by_tenant):
            result.merge(self._apply_tenant_with_retry(tenant_id, by_tenant[tenant_id], horizon_ms))
        for action in result.follow_ups.values():
            self._with_db_retry(functools.partial(_in_transaction, action=action))
        return result

    def run_after_commit(self, result: ApplyResult) -> None:
        """The database follow-ups of a batch whose Kafka transaction committed."""
        for action in result.after_commit:
            self._with_db_retry(functools.partial(_in_transaction, action=action))

    def decode(self, logical: str, msg: Message) -> Envelope:
        """Decode and validate one message (raises PoisonMessage)."""
        kind, record = self.codec.decode(logical, msg.value())
        json_fields = contracts.validate(kind, record)
        tenant = record.get("tenant_id")
        if tenant is None:
            raise PoisonMessage("missing_tenant", "tenant_id is missing")
        envelope = Envelope(
            topic=logical,
            partition=int(msg.partition() or 0),
            offset=int(msg.offset() or 0),
            key=msg.key(),
            kind=kind,
            record=record,
            tenant_id=tenant if isinstance(tenant, uuid.UUID) else uuid.UUID(str(tenant)),
            correlation_id=record.get("correlation_id") or _header_correlation(msg) or None,
            published_ms=_timestamp_ms(msg),
        )
        handler = self.handler_by_topic.get(logical)
        row = None if handler is None else handler.prepare(envelope, json_fields)
        return envelope if row is None else envelope._replace(row=row)

    def _apply_tenant_with_retry(
        self, tenant_id: uuid.UUID, batch: list[Envelope], horizon_ms: int | None = None
    ) -> ApplyResult:
        try:
            return self._with_db_retry(
                lambda conn: self._apply_tenant(conn, tenant_id, batch, horizon_ms)
            )
        except psycopg.Error as exc:
            if len(batch) == 1:
                rejected = PoisonMessage("db_rejected", first_line(exc))
                return ApplyResult(rejected=[(batch[0], rejected)])
            # a data error poisons only its own message: split until it is isolated
            half = len(batch) // 2
            left = self._apply_tenant_with_retry(tenant_id, batch[:half], horizon_ms)
            left.merge(self._apply_tenant_with_retry(tenant_id, batch[half:], horizon_ms))
            return left

    def _apply_tenant(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
        horizon_ms: int | None = None,
    ) -> ApplyResult:
        result = ApplyResult()
        by_topic: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in batch:
            by_topic[envelope.topic].append(envelope)
        with db.tenant_transaction(conn, tenant_id):
            for handler in self.handlers:
                envelopes = by_topic.get(handler.topic)
                if not envelopes:
                    continue
                if handler.requires_active_tenant:
                    envelopes, waiting, rejected = tenancy.judge(conn, envelopes, horizon_ms)
                    result.unregistered += waiting
                    result.rejected += rejected
                    if not envelopes:
                        continue
                part = handler.apply(conn, tenant_id, envelopes, self.ctx)
                part.by_topic = {handler.topic: (part.applied, part.duplicates)}
                result.merge(part)
        return result

    # ------------------------------------------------------------------ database, with retries
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.settings.require_database())
        return self._conn

    def _with_db_retry(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("database unavailable (%s); retry %d", exc, state.attempt_number)
            if self.on_retry is not None:
                self.on_retry("db")
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None

        for attempt in Retrying(
            retry=retry_if_exception(db.is_transient),
            wait=wait_exponential_jitter(multiplier=0.2, max=10),
            stop=stop_never,
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                if self.stopping and attempt.retry_state.attempt_number > 1:
                    raise LeoError("stopping while the database is unavailable; nothing committed")
                return work(self._connection())
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ Kafka transaction
    def _transactional_producer(self) -> TopicProducer:
        return TopicProducer(
            self.settings,
            codec=self.codec,
            transactional=True,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )

    def _commit(
        self,
        consumer: Consumer,
        out: TopicProducer,
        *,
        offsets: list[TopicPartition],
        dead: list[DeadLetter],
        outgoing: list[Outgoing],
        streams: Iterable[OutgoingStream] = (),
    ) -> bool:
        """Produce outputs and commit offsets atomically; False if aborted (batch rewound)."""
        producer = out.producer
        try:
            producer.begin_transaction()
            for d in dead:
                key, value, headers = d.encode(self.codec)
                out.produce_raw(self.settings.topic("dead-letters"), key, value, headers)
            for o in outgoing:
                out.produce_raw(o.topic, o.key, o.value, o.headers)
            for stream in streams:
                for o in stream(self._connection()):
                    out.produce_raw(o.topic, o.key, o.value, o.headers)
            _send_offsets(producer, offsets, consumer.consumer_group_metadata())
            _commit_transaction(producer, self.on_retry)
        except _ProducerWedged:
            # Its blocked call still runs in a helper thread: keep the producer referenced (never
            # destroyed under it) and go on with a new one. The broker aborts the stuck
            # transaction after TRANSACTION_TIMEOUT_MS; this batch is re-applied (idempotent).
            self._wedged.append(producer)
            out.producer = self._transactional_producer().producer
            if self.on_retry is not None:
                self.on_retry("kafka")
            log.error("Kafka transaction API hung; replaced the producer, batch will be re-applied")
            return False
        except KafkaException as exc:
            error = exc.args[0]
            # a retriable error here is send_offsets giving up on an unavailable coordinator
            if isinstance(error, KafkaError) and (error.txn_requires_abort() or error.retriable()):
                producer.abort_transaction(60)
                if self.on_retry is not None:
                    self.on_retry("kafka")
                log.warning("Kafka transaction aborted (%s); batch will be re-applied", error)
                return False
            raise LeoError(f"Kafka transaction failed: {exc}") from exc
        except psycopg.Error as exc:  # a stream's database read failed: nothing is committed
            producer.abort_transaction(60)
            log.warning("database read inside the Kafka transaction failed (%s); re-applying", exc)
            return False
        return True


class _ProducerWedged(Exception):
    """A transactional API call did not return within its own timeout."""


def _send_offsets(
    producer: Producer, offsets: list[TopicPartition], group_metadata: object
) -> None:
    """``send_offsets_to_transaction`` with a deadline of our own: librdkafka can block in it
    forever, past its timeout, when the broker that was the group coordinator went away (a
    broker restart): confluentinc/librdkafka#5456 and #5511. Raises ``_ProducerWedged`` then."""
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            producer.send_offsets_to_transaction(offsets, group_metadata, SEND_OFFSETS_TIMEOUT_S)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call, name="leo-send-offsets", daemon=True)
    worker.start()
    worker.join(SEND_OFFSETS_TIMEOUT_S + 10)
    if not outcome:
        raise _ProducerWedged()
    if outcome[0] is not None:
        raise outcome[0]


def _commit_transaction(producer: Producer, on_retry: Callable[[str], None] | None = None) -> None:
    """Commit, retrying while the broker says the error is retriable (e.g. it is restarting)."""
    delay = 0.5
    while True:
        try:
            producer.commit_transaction(60)
            return
        except KafkaException as exc:
            error = exc.args[0]
            if not (isinstance(error, KafkaError) and error.retriable()):
                raise
            log.warning("Kafka commit not yet possible (%s); retrying", error)
            if on_retry is not None:
                on_retry("kafka")
            time.sleep(delay)
            delay = min(delay * 2, 10)


def _in_transaction(
    conn: psycopg.Connection[Any], action: Callable[[psycopg.Connection[Any]], None]
) -> None:
    with conn.transaction():
        action(conn)


def _header_correlation(msg: Message) -> str | None:
    value = dict(msg.headers() or []).get(CORRELATION_HEADER)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _offsets_readable(consumer: Consumer) -> bool:
    """False while the group's committed offsets cannot be read: after a consumer died inside its
    Kafka transaction the broker answers UNSTABLE_OFFSET_COMMIT until that transaction is aborted
    (``TRANSACTION_TIMEOUT_MS``), and nothing is fetched meanwhile. That is not idleness."""
    assignment = consumer.assignment()
    if not assignment:
        return True
    try:
        consumer.committed(assignment, timeout=5)
    except KafkaException as exc:
        log.warning("committed offsets not readable yet (%s); waiting", exc)
        return False
    return True


def _is_partition_eof(msg: Message) -> bool:
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


def _next_offsets(
    messages: list[Message], waiting: dict[tuple[str, int], int] | None = None
) -> list[TopicPartition]:
    """The offsets to commit: past the batch, but not past a partition's first waiting message."""
    highest: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (str(m.topic()), int(m.partition() or 0))
        highest[key] = max(highest.get(key, -1), int(m.offset() or 0))
    committed = {key: offset + 1 for key, offset in highest.items()} | (waiting or {})
    return [TopicPartition(t, p, o) for (t, p), o in sorted(committed.items())]


def _timestamp_ms(msg: Message) -> int:
    kind, value = msg.timestamp()
    return int(value) if kind != TIMESTAMP_NOT_AVAILABLE else 0


def _first_readable_ms(
    settings: Settings, starts: list[TopicPartition], known: dict[tuple[int, int], int]
) -> int | None:
    """The earliest timestamp among each partition's first readable message from ``starts`` (per
    partition, later messages are later). ``known`` caches them: a message never changes."""
    found = [
        known[(tp.partition, tp.offset)] for tp in starts if (tp.partition, tp.offset) in known
    ]
    todo = [tp for tp in starts if (tp.partition, tp.offset) not in known]
    if not todo:
        return min(found, default=None)
    probe = reader(settings, "probe")
    try:
        probe.assign(todo)
        pending = {tp.partition: tp.offset for tp in todo}
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            msg = probe.poll(0.2)
            if msg is None:
                continue
            partition = int(msg.partition() or 0)
            if _is_partition_eof(msg):  # only transaction markers: nothing unread there
                pending.pop(partition, None)
            elif msg.error() is None and partition in pending:
                known[(partition, pending.pop(partition))] = _timestamp_ms(msg)
                found.append(_timestamp_ms(msg))
        if pending:  # could not tell in time: everything waits rather than be misjudged
            return -(1 << 62)
        return min(found, default=None)
    finally:
        probe.close()


def _at_or_after(coords: Coords, waiting: dict[tuple[str, int], int]) -> bool:
    first = waiting.get(coords[:2])
    return first is not None and coords[2] >= first


def _key(msg: Message) -> tuple[str, int]:
    return str(msg.topic()), int(msg.partition() or 0)


def _coords(msg: Message) -> Coords:
    return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)


def _first_offsets(messages: list[Message]) -> dict[tuple[str, int], int]:
    """Each partition's first offset in ``messages``."""
    lowest: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (str(m.topic()), int(m.partition() or 0))
        lowest[key] = min(lowest.get(key, 1 << 62), int(m.offset() or 0))
    return lowest


def _seek(consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
    for (topic, partition), offset in offsets.items():
        consumer.seek(TopicPartition(topic, partition, offset))


def cli_consume(settings: Settings, args: Any) -> int:
    from leo_activation.engine.metrics import EngineMetrics
    from leo_activation.jsonlog import configure as configure_json_logs

    configure_json_logs()
    settings = settings.with_overrides(batch_size=args.batch_size, metrics_port=args.metrics_port)
    topics = [
        settings.logical_topic(settings.resolve_topic(t)) for t in (args.topics or INPUT_TOPICS)
    ]
    engine = Engine(settings, topics=topics, group=args.group)
    if settings.metrics_port is not None:
        EngineMetrics().attach(engine).serve(settings.metrics_port)
    signal.signal(signal.SIGTERM, _stop_handler(engine))
    signal.signal(signal.SIGINT, _stop_handler(engine))
    engine.run(until_idle=args.until_idle)
    return 0


def _stop_handler(engine: Engine) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        engine.request_stop()

    return handle
