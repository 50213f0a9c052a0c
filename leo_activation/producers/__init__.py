"""Typed producers: one module per topic, sharing the :class:`TopicProducer` core here.

Every producer is idempotent (``enable.idempotence``, ``acks=all``), keys messages per SPEC §3 and
checks every delivery report: :meth:`TopicProducer.flush` raises if any message was not written.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from leo_activation.codec import Codec, make_codec
from leo_activation.errors import LeoError
from leo_activation.kafka import message_key
from leo_activation.settings import Settings

Headers = Sequence[tuple[str, bytes]]


def producer_config(
    settings: Settings, transactional: bool = False, transaction_timeout_ms: int = 900_000
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.require_kafka(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        **settings.extra_kafka,
    }
    if transactional:
        # a fresh id per process: fencing of zombies is by consumer-group generation (KIP-447)
        config["transactional.id"] = f"leo-{uuid.uuid4().hex}"
        # how long the broker keeps a transaction of a producer that died open; read_committed
        # readers of its partitions (and its group's offsets) wait that long
        config["transaction.timeout.ms"] = transaction_timeout_ms
    return config


class TopicProducer:
    """Encodes records with the topic's Avro contract and produces them with the right key."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        transactional: bool = False,
        transaction_timeout_ms: int = 900_000,
    ) -> None:
        self.settings = settings
        self.codec = codec or make_codec(settings.schema_registry_url)
        self.producer = Producer(producer_config(settings, transactional, transaction_timeout_ms))
        self._failures: list[str] = []
        if transactional:
            self.producer.init_transactions(30)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def send(
        self,
        logical_topic: str,
        kind: str,
        record: Mapping[str, Any],
        headers: Headers | None = None,
    ) -> None:
        self.produce_raw(
            self.settings.topic(logical_topic),
            message_key(logical_topic, record),
            self.codec.encode(kind, record),
            headers,
        )

    def produce_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers or []),
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain, then retry

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            raise LeoError(f"{remaining} messages not delivered within {timeout:.0f}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise LeoError(f"{len(failures)} messages failed: {failures[0]}")


def tenant_str(tenant_id: uuid.UUID | str) -> str:
    return str(uuid.UUID(str(tenant_id)))
