"""Typed producers: one module per topic, sharing the :class:`TopicProducer` core here.

Every producer is idempotent (``enable.idempotence``, ``acks=all``: ``kafka.producer_config``),
keys messages by the topic's rule (``kafka.message_key``) and checks every delivery report:
:meth:`TopicProducer.flush` raises if any message was not written;
:meth:`TopicProducer.transaction` commits all of a block or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from leo_activation.codec import Codec, make_codec
from leo_activation.errors import LeoError
from leo_activation.kafka import TRANSACTION_TIMEOUT_MS, message_key, producer_config
from leo_activation.settings import Settings

Headers = Sequence[tuple[str, bytes | None]]  # a header may have no value


class TopicProducer:
    """Encodes records with the topic's Avro contract and produces them with the right key."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        transactional: bool = False,
        transaction_timeout_ms: int = TRANSACTION_TIMEOUT_MS,
        transactional_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.codec = codec or make_codec(settings)
        config = producer_config(settings, transactional, transaction_timeout_ms)
        if transactional_id is not None:
            # a replacement producer under the same id fences its predecessor and aborts the
            # transaction that one left open at once, instead of after the transaction timeout
            config["transactional.id"] = transactional_id
        self.producer = Producer(config)
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

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """What is produced inside is delivered and committed as one Kafka transaction, or, on
        any error (an interrupt too), aborted: read_committed consumers see all of it or none.
        The engine drives its own transactions (offsets, a hung coordinator: ``engine.loop``)."""
        self.producer.begin_transaction()
        try:
            yield
            self.flush()
            self.producer.commit_transaction(120)
        except BaseException:
            self.producer.abort_transaction(60)
            raise
