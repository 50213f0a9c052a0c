"""Topic names, message keys and topic creation.

Keys keep per-key order (SPEC §3): commands by tenant, CDP changes by tenant + profile, requests
and receipts by tenant + delivery. Input topics keep their history forever (``retention.ms=-1``):
the database is a projection of them, and rebuilding it needs every message. The dead-letter
topic has a single partition, so a dead letter's offset alone names it (``dead-letters redrive``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from leo_activation.errors import LeoError
from leo_activation.settings import TOPIC_SUFFIXES, Settings

INPUT_TOPICS = ("commands", "profile-changes", "receipts")
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "commands": ("tenant_id",),
    "profile-changes": ("tenant_id", "profile_id"),
    "receipts": ("tenant_id", "delivery_id"),
    "delivery-requests": ("tenant_id", "delivery_id"),
}


def message_key(logical_topic: str, record: Mapping[str, Any]) -> bytes:
    return ":".join(str(record[name]) for name in KEY_FIELDS[logical_topic]).encode()


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """The engine's Kafka consumer settings (the benchmarks' baselines read topics with them too).

    ``session.timeout.ms`` is 10 s instead of librdkafka's 45 s: a consumer that died without
    leaving the group (SIGKILL, OOM, lost host) holds its partitions until its session expires,
    so this bounds how long a restarted or surviving consumer waits to take them over. Heartbeats
    come from librdkafka's own thread, so a long batch does not starve them.
    """
    return {
        "bootstrap.servers": settings.require_kafka(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "max.poll.interval.ms": 600_000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        # Prefetch about a batch per partition, in fetches of at most 1 MiB compressed. The
        # librdkafka defaults (100,000 messages a partition, 64 MiB, 1 MiB a partition and 50 MiB
        # a fetch, decompressed on arrival) let memory grow with how far behind the consumer is;
        # these keep batches just as full while memory stays flat against the backlog.
        "queued.min.messages": max(1_000, settings.batch_size),
        "queued.max.messages.kbytes": 16_384,
        "fetch.max.bytes": 1 << 20,
        "max.partition.fetch.bytes": 256 << 10,
        "fetch.queue.backoff.ms": 20,  # re-check a full queue soon (default: a whole second)
        **settings.extra_kafka,
        # Eager rebalancing, whatever the extras say: a rebalance drops the batch decoded ahead
        # (Engine.run), which is only safe when it takes every partition back and the next
        # assignment resumes from the committed offsets. An incremental protocol would keep some
        # partitions positioned past the dropped messages.
        "group.protocol": "classic",
        "partition.assignment.strategy": "range,roundrobin",
    }


def ensure_topics(settings: Settings, logical: Iterable[str] = TOPIC_SUFFIXES) -> None:
    """Create any missing topic of this deployment (idempotent)."""
    admin = AdminClient({"bootstrap.servers": settings.require_kafka()})
    partitions = int(os.environ.get("LEO_TOPIC_PARTITIONS", "6"))
    try:
        brokers = len(admin.list_topics(timeout=15).brokers)
    except KafkaException as exc:
        raise LeoError(f"Kafka at {settings.kafka_bootstrap} does not answer: {exc}") from exc
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = [
        NewTopic(
            settings.topic(name),
            num_partitions=1 if name == "dead-letters" else partitions,
            replication_factor=min(3, brokers),
            config={"retention.ms": "-1"} if name != "delivery-requests" else {},
        )
        for name in logical
        if settings.topic(name) not in existing
    ]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise LeoError(f"cannot create topic {topic}: {exc}") from exc


READ_TIMEOUT_S = 60.0


def reader(settings: Settings, purpose: str) -> Consumer:
    """A consumer for ``assign()`` reads: read-committed, reports partition ends, and never
    commits, so its throw-away group id leaves no group behind."""
    return Consumer(
        {
            "bootstrap.servers": settings.require_kafka(),
            "group.id": f"leo-{purpose}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            **settings.extra_kafka,
        }
    )


def read_to_end(
    settings: Settings, logical: str, start: dict[int, int] | None = None
) -> list[Message]:
    """Every committed message of a topic from ``start`` (partition -> offset; default the
    beginning) to its current end, in partition then offset order."""
    consumer = reader(settings, "read")
    topic = settings.topic(logical)
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        offsets = start or {}
        consumer.assign(
            [TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        messages: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise LeoError(
                    f"reading {topic} did not reach its end within {READ_TIMEOUT_S:.0f}s"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition() or 0))
                    continue
                if error.retriable():  # e.g. a leader moving: the client retries by itself
                    continue
                raise LeoError(f"reading {topic}: {error}")
            messages.append(msg)
        messages.sort(key=lambda m: (int(m.partition() or 0), int(m.offset() or 0)))
        return messages
    finally:
        consumer.close()
