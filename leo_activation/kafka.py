"""Every Kafka client this package makes, and what it asks of topics.

Settings become librdkafka configuration here and nowhere else: the engine's consumer, the
producers, the readers, the metadata consumer and the admin client; ``Settings.extra_kafka`` is
applied to each of them.

Keys keep per-key order: commands by tenant, CDP changes by tenant + profile, requests
and receipts by tenant + delivery. Input topics keep their history forever (``retention.ms=-1``):
the database is a projection of them, and rebuilding it needs every message. The dead-letter
topic has a single partition, so a dead letter's offset alone names it (``dead-letters redrive``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from leo_activation import kafka_log
from leo_activation.errors import LeoError, UsageError
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


ADMIN_TIMEOUT_S = 30.0
# Producers' default transaction timeout: sized for large ``publish`` transactions.
TRANSACTION_TIMEOUT_MS = 900_000


def _config(settings: Settings, config: Mapping[str, Any]) -> dict[str, Any]:
    return kafka_log.with_logger(
        {"bootstrap.servers": settings.require_kafka(), **config, **settings.extra_kafka}
    )


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """The engine's Kafka consumer settings (the benchmarks' baselines read topics with them too).

    ``session.timeout.ms`` is 10 s instead of librdkafka's 45 s: a consumer that died without
    leaving the group (SIGKILL, OOM, lost host) holds its partitions until its session expires,
    so this bounds how long a restarted or surviving consumer waits to take them over. Heartbeats
    come from librdkafka's own thread, so a long batch does not starve them.
    """
    config = {
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
        # these keep batches just as full (README, Performance: RSS flat against the backlog).
        "queued.min.messages": max(1_000, settings.batch_size),
        "queued.max.messages.kbytes": 16_384,
        "fetch.max.bytes": 1 << 20,
        "max.partition.fetch.bytes": 256 << 10,
        "fetch.queue.backoff.ms": 20,  # re-check a full queue soon (default: a whole second)
    }
    return {
        **_config(settings, config),
        # Eager rebalancing, whatever the extras say: a rebalance drops the batch decoded ahead
        # (Engine.run), which is only safe when it takes every partition back and the next
        # assignment resumes from the committed offsets. An incremental protocol would keep some
        # partitions positioned past the dropped messages.
        "group.protocol": "classic",
        "partition.assignment.strategy": "range,roundrobin",
    }


def producer_config(
    settings: Settings,
    transactional: bool = False,
    transaction_timeout_ms: int = TRANSACTION_TIMEOUT_MS,
) -> dict[str, Any]:
    """Idempotent (``enable.idempotence``, ``acks=all``); transactional on request."""
    config = _config(
        settings,
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        },
    )
    if transactional:
        # a fresh id per process: fencing of zombies is by consumer-group generation (KIP-447)
        config["transactional.id"] = f"leo-{uuid.uuid4().hex}"
        # how long the broker keeps a transaction of a producer that died open; read_committed
        # readers of its partitions (and its group's offsets) wait that long
        config["transaction.timeout.ms"] = transaction_timeout_ms
    return config


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(_config(settings, {}))


def reader(settings: Settings, purpose: str) -> Consumer:
    """A consumer for ``assign()`` reads: read-committed, reports partition ends, and never
    commits, so its throw-away group id leaves no group behind."""
    return Consumer(
        _config(
            settings,
            {
                "group.id": f"leo-{purpose}-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )


def metadata_consumer(settings: Settings) -> Consumer:
    """A consumer used only for metadata queries (watermarks, offsets by time): it never
    subscribes nor commits. It keeps librdkafka's default isolation, so high watermarks are the
    log end, open transactions included."""
    return Consumer(
        _config(
            settings,
            {"group.id": f"leo-inspect-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False},
        )
    )


def ensure_topics(settings: Settings, logical: Iterable[str] = TOPIC_SUFFIXES) -> None:
    """Create any missing topic of this deployment (idempotent)."""
    admin = admin_client(settings)
    try:
        brokers = len(admin.list_topics(timeout=15).brokers)
    except KafkaException as exc:
        raise LeoError(f"Kafka at {settings.kafka_bootstrap} does not answer: {exc}") from exc
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = [
        NewTopic(
            settings.topic(name),
            num_partitions=1 if name == "dead-letters" else settings.topic_partitions,
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


def topic_partitions(admin: AdminClient, physical: str) -> list[int]:
    """The topic's partition numbers; UsageError if the topic does not exist."""
    try:
        metadata = admin.list_topics(topic=physical, timeout=ADMIN_TIMEOUT_S).topics.get(physical)
    except KafkaException as exc:
        raise LeoError(f"Kafka does not answer: {exc}") from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise UsageError(f"topic {physical} does not exist")
    return sorted(metadata.partitions)


def committed_offsets(
    admin: AdminClient, group: str, physical: str, partitions: list[int]
) -> dict[int, int | None]:
    """The group's committed offset per partition (None: it has none there yet)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(physical, p) for p in partitions])
    future = admin.list_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)[group]
    try:
        result = future.result()
    except KafkaException as exc:
        raise LeoError(f"cannot read the offsets of group {group}: {exc}") from exc
    return {
        tp.partition: (None if tp.offset < 0 else int(tp.offset)) for tp in result.topic_partitions
    }


READ_TIMEOUT_S = 60.0


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
