"""Prometheus metrics of a running consumer (``consume --metrics-port`` / ``LEO_METRICS_PORT``).

Every series is labelled by logical topic (never by tenant: the label set must stay small).

=========================================== =========== ====================================
name                                        type        meaning
=========================================== =========== ====================================
``leo_messages_consumed_total{topic}``      counter     messages taken from the topic
``leo_messages_applied_total{topic}``       counter     ... that changed the database
``leo_messages_duplicate_total{topic}``     counter     ... that were already applied
``leo_messages_dead_lettered_total{topic}`` counter     ... sent to the dead-letter topic
``leo_accounting_mismatches_total``         counter     batches where consumed != applied +
                                                        duplicate + dead-lettered (a silent
                                                        loss); must stay 0
``leo_retries_total{kind}``                 counter     transient faults retried (``db``,
                                                        ``kafka``)
``leo_batches_total``                       counter     committed batches
``leo_batch_messages``                      histogram   messages per batch
``leo_batch_apply_seconds``                 histogram   database time per batch
``leo_last_batch_timestamp_seconds``        gauge       unix time of the last committed batch
``leo_consumer_lag{topic,partition}``       gauge       high watermark - position, per
                                                        partition assigned to this process
=========================================== =========== ====================================

Counters move once per committed batch (an aborted Kafka transaction counts nothing: the batch
is re-applied and counted then). Lag is read from the consumer's cached watermarks, refreshed at
most every ``LAG_REFRESH_S`` seconds after a batch or an empty poll; with transactional
producers a fully caught-up partition can show a lag of a few offsets (commit markers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

from leo_activation.engine.stats import BatchStats
from leo_activation.errors import LeoError

LAG_REFRESH_S = 5.0
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# (logical topic, partition, lag) per partition assigned to the process
Lag = Callable[[], Iterable[tuple[str, int, int]]]


class EngineMetrics:
    """The metrics of one engine, in a registry of their own (so tests can make several); fed by
    the engine's ``on_batch``, ``on_retry`` and ``on_idle`` callbacks and by a ``lag`` reader."""

    def __init__(self, topics: Sequence[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        if registry is None:
            ProcessCollector(registry=self.registry)  # process_resident_memory_bytes etc.
        r = self.registry
        self.consumed = Counter("leo_messages_consumed", "Messages consumed", ["topic"], registry=r)
        self.applied = Counter(
            "leo_messages_applied", "Messages that changed the database", ["topic"], registry=r
        )
        self.duplicate = Counter(
            "leo_messages_duplicate", "Messages already applied before", ["topic"], registry=r
        )
        self.dead_lettered = Counter(
            "leo_messages_dead_lettered", "Messages sent to the dead-letter topic", ["topic"],
            registry=r,
        )  # fmt: skip
        self.mismatches = Counter(
            "leo_accounting_mismatches",
            "Batches whose consumed count differs from applied + duplicate + dead-lettered",
            registry=r,
        )
        self.retries = Counter(
            "leo_retries", "Transient faults retried, by kind (db, kafka)", ["kind"], registry=r
        )
        self.batches = Counter("leo_batches", "Committed batches", registry=r)
        self.batch_size = Histogram(
            "leo_batch_messages", "Messages per batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.apply_seconds = Histogram(
            "leo_batch_apply_seconds", "Database time per batch", buckets=_SECONDS_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.last_batch = Gauge(
            "leo_last_batch_timestamp_seconds", "Unix time of the last committed batch",
            registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "leo_consumer_lag", "High watermark minus position, per assigned partition",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        for kind in ("db", "kafka"):
            self.retries.labels(kind)  # export 0 before the first retry
        for topic in topics:
            for counter in (self.consumed, self.applied, self.duplicate, self.dead_lettered):
                counter.labels(topic)  # every topic's series exists from the start
        self._lag: Lag | None = None
        self._lag_at = 0.0
        self._lag_labels: set[tuple[str, str]] = set()

    def watch(self, lag: Lag) -> EngineMetrics:
        """Read per-partition lag from ``lag`` (e.g. ``Engine.lag``)."""
        self._lag = lag
        return self

    def serve(self, port: int, addr: str = "0.0.0.0") -> EngineMetrics:  # noqa: S104
        """Serve ``/metrics`` on ``port`` from a daemon thread."""
        try:
            start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:  # in use, or privileged: said before any message is read
            raise LeoError(
                f"metrics port {port} [--metrics-port, LEO_METRICS_PORT]: {exc.strerror or exc}"
            ) from None
        return self

    # ------------------------------------------------------------------ observations
    def observe_batch(self, stats: BatchStats) -> None:
        for topic, counts in stats.topics.items():
            self.consumed.labels(topic).inc(counts.consumed)
            self.applied.labels(topic).inc(counts.applied)
            self.duplicate.labels(topic).inc(counts.duplicates)
            self.dead_lettered.labels(topic).inc(counts.dead_lettered)
        if not stats.balanced() or any(not c.balanced() for c in stats.topics.values()):
            self.mismatches.inc()
        self.batches.inc()
        self.batch_size.observe(stats.consumed)
        self.apply_seconds.observe(stats.db_seconds)
        self.last_batch.set(time.time())
        self.refresh_lag()

    def count_retry(self, kind: str) -> None:
        self.retries.labels(kind).inc()

    def refresh_lag(self, *, force: bool = False) -> None:
        """Per assigned partition: cached high watermark - position (at most every few s)."""
        now = time.monotonic()
        if self._lag is None or (not force and now - self._lag_at < LAG_REFRESH_S):
            return
        self._lag_at = now
        seen: set[tuple[str, str]] = set()
        try:
            for topic, partition, lag in self._lag():
                labels = (topic, str(partition))
                self.lag.labels(*labels).set(lag)
                seen.add(labels)
        except KafkaException:
            return  # a rebalance or a broker blip; the next refresh will do
        for labels in self._lag_labels - seen:
            self.lag.remove(*labels)  # a partition this process no longer owns
        self._lag_labels = seen
