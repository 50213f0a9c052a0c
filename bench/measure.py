"""The things the benchmarks time: the real engine, the two raw ceilings and the naive consumer."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, Message
from psycopg import sql

from leo_activation import contracts, db
from leo_activation.codec import make_codec
from leo_activation.consumers import HANDLERS
from leo_activation.engine.decode import Decoder, Polled
from leo_activation.engine.handler import Envelope
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.kafka import consumer_config as engine_consumer_config
from leo_activation.settings import Settings


@dataclass
class Rate:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


# ---------------------------------------------------------------------- the product


class _FirstBatchDecoder(Decoder):
    """The engine's decoder; notes when the first batch arrived."""

    first: float | None = None

    def decode_batch(self, messages: list[Message]) -> Polled:
        if self.first is None:
            self.first = time.perf_counter()
        return super().decode_batch(messages)


class _TimedEngine(Engine):
    """The real engine; only notes when its first batch arrived and stops once ``expected``
    messages are accounted for (so the idle wait at the end is not timed)."""

    def __init__(
        self, settings: Settings, expected: int, *, native: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(settings, HANDLERS, on_batch=self._batch_done, **kwargs)
        self.decoder = self.timed = _FirstBatchDecoder(
            self.codec, HANDLERS, self.logical_by_physical, self.group, native=native
        )
        self.expected = expected
        self.last = 0.0
        self.totals = BatchStats()

    @property
    def first(self) -> float | None:
        return self.timed.first

    def _batch_done(self, stats: BatchStats) -> None:
        self.last = time.perf_counter()
        self.totals.add(stats)
        # messages settled for good (a deferred one is consumed again later)
        if self.settled >= self.expected:
            self.request_stop()

    @property
    def settled(self) -> int:
        t = self.totals
        return t.applied + t.duplicates + t.dead_lettered


def engine_rate(
    settings: Settings, topics: Sequence[str], expected: int, *, native: bool = True
) -> tuple[Rate, BatchStats]:
    """Messages per second through ``Engine`` (first batch polled -> last batch committed);
    ``native=False``: with the native extension off, every message on the Python path."""
    engine = _TimedEngine(settings, expected, topics=topics, native=native)
    engine.run(until_idle=30)
    if engine.first is None or engine.settled < expected:
        raise RuntimeError(f"engine settled {engine.settled} of {expected} messages")
    return Rate(engine.settled, engine.last - engine.first), engine.totals


def consume_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``leo-activation consume`` child that runs with ``settings``."""
    return {
        **os.environ,
        "LEO_KAFKA_BOOTSTRAP": settings.require_kafka(),
        "LEO_DATABASE_URL": settings.require_database(),
        "LEO_ADMIN_DATABASE_URL": settings.require_admin_database(),
        "LEO_TOPIC_PREFIX": settings.topic_prefix,
        "LEO_GROUP_ID": settings.group_id,
        "LEO_TOPIC_REPLICATION_FACTOR": str(settings.topic_replication_factor),
        "LEO_TOPIC_MIN_INSYNC_REPLICAS": str(settings.topic_min_insync_replicas),
    }


# ---------------------------------------------------------------------- ceiling (a)


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """The engine's consumer configuration, for the baselines to read the topic the same way."""
    return dict(engine_consumer_config(settings, group))


def decode_only_rate(settings: Settings, topic: str, expected: int, group: str) -> Rate:
    """Ceiling (a): a bare consumer of the same topic that only decodes each message."""
    codec = make_codec(settings)
    consumer = Consumer(consumer_config(settings, group))
    consumer.subscribe([settings.topic(topic)])
    count, first, last = 0, None, 0.0
    deadline = time.monotonic() + 600
    try:
        while count < expected and time.monotonic() < deadline:
            batch = consumer.consume(settings.batch_size, settings.batch_timeout_s)
            if first is None and batch:
                first = time.perf_counter()
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(str(error))
                codec.decode(topic, msg.value())
                count += 1
            last = time.perf_counter()
    finally:
        consumer.close()
    if first is None or count < expected:
        raise RuntimeError(f"decode-only consumer read {count} of {expected}")
    return Rate(count, last - first)


# ---------------------------------------------------------------------- ceiling (b)


@dataclass
class CopyLoad:
    table: str
    columns: Sequence[str]
    rows: Iterable[Sequence[Any]]


def copy_rate(admin_url: str, loads: Sequence[CopyLoad], messages: int) -> Rate:
    """Ceiling (b): binary COPY of exactly the rows the product writes, as the owner, into the
    (empty) tables of a fresh database. The binary stream is prepared by the server beforehand,
    so only ``COPY ... FROM STDIN (FORMAT BINARY)`` and its commit are timed."""
    files: list[tuple[CopyLoad, Path]] = []
    with tempfile.TemporaryDirectory(prefix="leo-bench-copy-") as tmp:
        with db.connect(admin_url, autocommit=True) as conn:
            for i, load in enumerate(loads):
                source = sql.Identifier(f"bench_src_{i}")
                cols = sql.SQL(", ").join(map(sql.Identifier, load.columns))
                conn.execute(
                    sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                        source, sql.Identifier(load.table)
                    )
                )
                with conn.cursor() as cur:  # untimed: text, as the rows come
                    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(source, cols)
                    with cur.copy(statement) as copy:
                        for row in load.rows:
                            copy.write_row(row)
                path = Path(tmp) / f"{i}.bin"
                with path.open("wb") as out, conn.cursor() as cur:
                    statement = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT BINARY)").format(
                        source, cols
                    )
                    with cur.copy(statement) as copy:
                        for chunk in copy:
                            out.write(chunk)
                conn.execute(sql.SQL("DROP TABLE {}").format(source))
                files.append((load, path))
            conn.execute("CHECKPOINT")
        with db.connect(admin_url) as conn:
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                for load, path in files:
                    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                        sql.Identifier(load.table),
                        sql.SQL(", ").join(map(sql.Identifier, load.columns)),
                    )
                    with cur.copy(statement) as copy, path.open("rb") as source_file:
                        while chunk := source_file.read(1 << 20):
                            copy.write(chunk)
            seconds = time.perf_counter() - started
    return Rate(messages, seconds)


# ---------------------------------------------------------------------- naive baseline


def naive_rate(
    settings: Settings,
    topic: str,
    limit: int,
    group: str,
    apply_one: Callable[[psycopg.Connection[Any], Envelope], None],
) -> Rate:
    """A naive consumer: one message at a time, one database transaction (tenant set per
    transaction, as the application role) and one commit per message. Its offsets are stored
    after each commit and auto-committed in the background, the cheapest honest way to commit
    them; so the naive figure is, if anything, flattering."""
    codec = make_codec(settings)
    config = consumer_config(settings, group)
    config |= {"enable.auto.commit": True, "auto.commit.interval.ms": 1000}
    consumer = Consumer(config)
    consumer.subscribe([settings.topic(topic)])
    count, first, last = 0, None, 0.0
    deadline = time.monotonic() + 600
    with db.connect(settings.require_database()) as conn:
        try:
            while count < limit and time.monotonic() < deadline:
                msg = consumer.poll(settings.batch_timeout_s)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(str(error))
                if first is None:
                    first = time.perf_counter()
                kind, record = codec.decode(topic, msg.value())
                contracts.validate(kind, record)
                tenant = uuid.UUID(str(record["tenant_id"]))
                envelope = Envelope(
                    topic, int(msg.partition() or 0), int(msg.offset() or 0), msg.key(), kind,
                    record, tenant, record.get("correlation_id"),
                )  # fmt: skip
                with db.tenant_transaction(conn, tenant):
                    apply_one(conn, envelope)
                consumer.store_offsets(msg)
                count += 1
                last = time.perf_counter()
        finally:
            with contextlib.suppress(Exception):
                consumer.close()
    if first is None or count < limit:
        raise RuntimeError(f"naive consumer applied {count} of {limit}")
    return Rate(count, last - first)
