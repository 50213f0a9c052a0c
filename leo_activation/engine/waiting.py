"""Messages that wait: a gated handler's messages published at or after the earliest unread
upstream message are read and judged again later. Their partitions are paused at the first
waiting offset so that the upstream topic keeps flowing, and resumed once upstream messages were
applied, or when nothing else is left to read. Behind a waiting offset, what was settled already
is read again: that is neither consumption nor duplication, and is skipped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported for type checkers

from leo_activation.engine.decode import Coords, Partition, Polled, Span, timestamp_ms
from leo_activation.engine.handler import Handler
from leo_activation.engine.stats import BatchStats
from leo_activation.kafka import admin_client, group_positions, reader
from leo_activation.settings import Settings

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 10.0
# an upstream horizon that could not be read: earlier than any message, so all of them wait
CANNOT_TELL_MS = -(1 << 62)
EARLIEST, LATEST = OffsetSpec.earliest(), OffsetSpec.latest()  # type: ignore[no-untyped-call]


class Waiting:
    """What this assignment knows of waiting partitions; a rebalance forgets it (the next read
    is a replay from the committed offsets)."""

    def __init__(
        self,
        settings: Settings,
        handlers: Sequence[Handler],
        group: str,
        patience_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.group = group
        self.patience_s = patience_s  # how long upstream positions are asked for, at most
        # logical upstream topic -> the logical topics whose messages wait for it
        self.gated: dict[str, set[str]] = {}
        for h in handlers:
            if h.gate is not None:
                self.gated.setdefault(h.gate.upstream, set()).add(h.topic)
        self.paused: dict[Partition, int] = {}  # partition -> first waiting offset
        # per partition, the offset after the highest one read and settled
        self.seen: dict[Partition, int] = {}
        self.deferred: set[Coords] = set()  # physical coordinates read again and settled later
        self._first_ms: dict[tuple[str, int, int], int] = {}  # upstream message -> its timestamp
        self._positions: Consumer | None = None  # asks where the group stands (made when needed)
        self._admin: AdminClient | None = None  # asks where the upstream partitions end

    def forget(self) -> None:
        self.paused, self.seen, self.deferred = {}, {}, set()

    def close(self) -> None:
        if self._positions is not None:
            self._positions.close()
            self._positions = None
        self._admin = None

    # ------------------------------------------------------------------ pausing
    def pause(self, consumer: Consumer, waiting: dict[Partition, int]) -> None:
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(waiting.items())]
        consumer.pause(partitions)
        for tp in partitions:  # also drops what was fetched past it
            consumer.seek(tp)
        self.paused.update(waiting)
        log.info("paused %d partitions waiting for upstream messages", len(partitions))

    def resume(self, consumer: Consumer) -> None:
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(self.paused.items())]
        self.paused = {}
        consumer.resume(partitions)

    def upstream_applied(self, spans: Mapping[Partition, Span]) -> bool:
        """Whether a committed batch (its ``spans``) held upstream messages something may wait
        for."""
        upstream = {self.settings.topic(t) for t in self.gated}
        return any(topic in upstream for topic, _ in spans)

    # ------------------------------------------------------------------ accounting
    def settled(self, polled: Polled, deferred: set[Coords]) -> None:
        """``polled`` was committed; ``deferred`` of its messages are read and settled again
        later."""
        for key, span in polled.spans.items():
            self.seen[key] = max(self.seen.get(key, 0), span.last + 1)
        if self.deferred:
            self.deferred -= {coords(m) for m in polled.messages}
        self.deferred |= deferred

    def _first_reads(self, spans: Mapping[Partition, Span]) -> bool:
        """Whether every message of a batch is read for the first time (nothing deferred, no
        partition read from behind what was settled): then no message needs looking at."""
        seen = self.seen
        return not self.deferred and all(
            span.first >= seen.get(key, 0) for key, span in spans.items()
        )

    def count_reads(
        self, stats: BatchStats, polled: Polled, logical_by_physical: Mapping[str, str]
    ) -> None:
        """Count a batch's messages as consumed (read for the first time) or resumed."""
        if self._first_reads(polled.spans):
            for (topic, _), span in polled.spans.items():
                stats.consumed += span.size
                stats.topic(logical_by_physical[topic]).consumed += span.size
            return
        for msg in polled.messages:
            counts = stats.topic(logical_by_physical[str(msg.topic())])
            seen = self.seen.get(partition_of(msg))
            if coords(msg) in self.deferred:
                stats.resumed += 1
                counts.resumed += 1
            elif seen is None or int(msg.offset() or 0) >= seen:
                stats.consumed += 1
                counts.consumed += 1

    def skip_reread(self, polled: Polled) -> int:
        """Take out of ``polled`` what is read again behind a waiting offset though this
        assignment settled it already (applied or judged a duplicate, its database transaction
        and outputs committed); return how many."""
        if self._first_reads(polled.spans):
            return 0

        def again(source: Coords) -> bool:
            seen = self.seen.get(source[:2])
            return seen is not None and source[2] < seen and source not in self.deferred

        skipped = 0
        for tenant, envelopes in list(polled.by_tenant.items()):
            kept = [e for e in envelopes if not again(coords(polled.message(e)))]
            skipped += len(envelopes) - len(kept)
            if kept:
                polled.by_tenant[tenant] = kept
            else:
                del polled.by_tenant[tenant]
        dead = [d for d in polled.dead if not again(d.source)]
        skipped += len(polled.dead) - len(dead)
        polled.dead = dead
        return skipped

    # ------------------------------------------------------------------ horizons
    def horizons(self, polled: Polled) -> dict[str, int | None]:
        """Per upstream topic that ``polled`` holds gated messages for, the Kafka timestamp of
        its earliest message the group has not read yet (this batch's count as read: they are
        applied first), or None if there is none, or ``CANNOT_TELL_MS`` if the cluster did not
        say within ``patience_s``. A partition whose committed offset is at its high watermark
        costs no read."""
        present = {e.topic for batch in polled.by_tenant.values() for e in batch}
        upstreams = [upstream for upstream, topics in self.gated.items() if topics & present]
        delay, deadline = 0.5, time.monotonic() + self.patience_s
        while True:
            try:
                return {upstream: self._unread_before(polled, upstream) for upstream in upstreams}
            except KafkaException as exc:  # a leader moving (a broker restarts): read again
                # with a new client: librdkafka can keep sending a leader epoch it cached, which
                # the cluster refuses for as long as that client lives
                self.close()
                if time.monotonic() + delay > deadline:
                    # Not forever: the loop must go on polling (and stop when asked). The gated
                    # messages wait, and are judged again when the batch is read again.
                    log.warning(
                        "upstream positions not readable for %.0f s (%s): their messages wait",
                        self.patience_s, exc.args[0],
                    )  # fmt: skip
                    return dict.fromkeys(upstreams, CANNOT_TELL_MS)
                log.warning("upstream positions not readable (%s); retrying", exc.args[0])
                time.sleep(delay)
                delay = min(delay * 2, 10)

    def _unread_before(self, polled: Polled, upstream: str) -> int | None:
        if self._positions is None:
            self._positions = group_positions(self.settings, self.group)
        consumer = self._positions
        topic = self.settings.topic(upstream)
        read = {p: span.last + 1 for (t, p), span in polled.spans.items() if t == topic}
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        if self._admin is None:
            self._admin = admin_client(self.settings, wait=False)
        # both ends of every partition, one request each for all of them, under way while the
        # committed offsets are asked: a round trip per partition would be paid every batch
        lows = list_offsets(self._admin, partitions, EARLIEST)
        highs = list_offsets(self._admin, partitions, LATEST, IsolationLevel.READ_COMMITTED)
        committed = consumer.committed(partitions, timeout=10)
        low, high = lows(), highs()
        starts = []
        for tp in committed:
            key = (topic, tp.partition)
            start = max(tp.offset, low[key], read.get(tp.partition, 0))
            if start < high[key]:  # maybe only a transaction marker: look at what is readable
                starts.append(TopicPartition(topic, tp.partition, start))
        return self._first_readable_ms(starts) if starts else None

    def _first_readable_ms(self, starts: list[TopicPartition]) -> int | None:
        """The earliest timestamp among each partition's first readable message from ``starts``
        (per partition, later messages are later); cached, since a message never changes."""
        known = self._first_ms
        found = [known[k] for k in map(_tp_coords, starts) if k in known]
        todo = [tp for tp in starts if _tp_coords(tp) not in known]
        if not todo:
            return min(found, default=None)
        probe = reader(self.settings, "probe")
        try:
            probe.assign(todo)
            pending = {tp.partition: tp for tp in todo}
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while pending and time.monotonic() < deadline:
                msg = probe.poll(0.2)
                if msg is None:
                    continue
                partition = int(msg.partition() or 0)
                if is_partition_eof(msg):  # only transaction markers: nothing unread there
                    pending.pop(partition, None)
                elif msg.error() is None and partition in pending:
                    known[_tp_coords(pending.pop(partition))] = timestamp_ms(msg)
                    found.append(timestamp_ms(msg))
            if pending:  # could not tell in time: everything waits rather than be misjudged
                return CANNOT_TELL_MS
            return min(found, default=None)
        finally:
            probe.close()


def is_partition_eof(msg: Message) -> bool:
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


def partition_of(msg: Message) -> Partition:
    return str(msg.topic()), int(msg.partition() or 0)


def coords(msg: Message) -> Coords:
    return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)


def _tp_coords(tp: TopicPartition) -> tuple[str, int, int]:
    return tp.topic, tp.partition, tp.offset


class OpenTransactions:
    """Says, one line per partition and at most once a minute each, when consumption is blocked
    behind an open transaction: the partition's read-committed end (its last stable offset) has
    not moved for ``after_s`` while its high watermark is past it. Some producer holds that
    transaction open (one that died inside it, say) and nothing after it is readable until it
    commits or the broker aborts it at its transaction timeout."""

    def __init__(
        self,
        settings: Settings,
        logical_by_physical: Mapping[str, str],
        *,
        after_s: float = 30.0,
        every_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.logical_by_physical = logical_by_physical
        self.after_s, self.every_s = after_s, every_s
        self._admin: AdminClient | None = None
        self._next_check = 0.0
        self._stable: dict[Partition, tuple[int, float]] = {}  # -> (last stable offset, since)
        self._logged: dict[Partition, float] = {}
        # partitions written past their read-committed end at the last check: not idle
        self.pending: set[Partition] = set()

    def check(self, consumer: Consumer, *, now: bool = False) -> None:
        """Probe the assigned partitions, at most every 10 s unless ``now``."""
        started = time.monotonic()
        assignment = consumer.assignment()
        if not assignment or (started < self._next_check and not now):
            return
        self._next_check = started + min(self.after_s, 10.0)
        try:
            if self._admin is None:
                self._admin = admin_client(self.settings)
            stable_ends = list_offsets(
                self._admin, assignment, LATEST, IsolationLevel.READ_COMMITTED
            )
            high_ends = list_offsets(self._admin, assignment, LATEST)
            stable, high = stable_ends(), high_ends()
        except KafkaException:
            # The cluster is away (that is logged where it is met), or a leader moved: librdkafka's
            # ListOffsets goes on sending the leader epoch it cached and the broker refuses it
            # (FENCED_LEADER_EPOCH) for as long as that client lives, so the next check makes a
            # new one.
            self._admin = None
            return
        self.pending = {key for key, lso in stable.items() if high.get(key, lso) > lso}
        for key, lso in stable.items():
            previous = self._stable.get(key)
            if previous is None or previous[0] != lso or high.get(key, lso) <= lso:
                self._stable[key] = (lso, started)
                continue
            blocked_s = started - previous[1]
            if blocked_s >= self.after_s and started - self._logged.get(key, -1e9) >= self.every_s:
                self._logged[key] = started
                topic, partition = key
                logical = self.logical_by_physical.get(topic, topic)
                log.warning(
                    "%s/%d blocked behind an open transaction for %.0fs: readable up to offset "
                    "%d, written up to %d; it is read once that transaction ends (the broker "
                    "aborts it at its producer's transaction timeout)",
                    logical, partition, blocked_s, lso, high[key],
                )  # fmt: skip


def list_offsets(
    admin: AdminClient,
    partitions: Sequence[TopicPartition],
    spec: OffsetSpec,
    isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
) -> Callable[[], dict[Partition, int]]:
    """Ask the offset ``spec`` names of every partition at once; what is returned waits for the
    answer (and raises ``KafkaException`` if the cluster refused)."""
    request = {TopicPartition(tp.topic, tp.partition): spec for tp in partitions}
    futures = admin.list_offsets(
        request, isolation_level=isolation, request_timeout=PROBE_TIMEOUT_S
    )
    return lambda: {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
