"""The gateway's only contact with the rest of the package: the receipts' contract, the producer
and the dead-letter builder. Kept in one place so it is easy to follow when they change.

:meth:`KafkaSink.deliver` resolves once Kafka acknowledged every record of a request (the
producer is idempotent with ``acks=all``) and raises :class:`Unavailable` otherwise; a record not
acknowledged within the ack timeout fails (``message.timeout.ms``) rather than lingering.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message

from leo_activation.contracts import validate
from leo_activation.errors import PoisonMessage
from leo_activation.gateway.events import Receipt, Unmapped
from leo_activation.kafka import ensure_topics, message_key
from leo_activation.producers import TopicProducer
from leo_activation.producers.dead_letters import DeadLetter
from leo_activation.settings import Settings

log = logging.getLogger("leo_activation.gateway")
KIND = "delivery_receipt"
GROUP = "gateway"  # the dead letter's consumer_group: who gave up on the event


class Unavailable(Exception):
    """Kafka did not acknowledge every record of a request: the provider must retry."""


def check(receipt: Receipt) -> Unmapped | None:
    """The contract's own checks (lengths, JSON depth...), as the consumer will run them."""
    try:
        validate(KIND, receipt.record)
    except PoisonMessage as exc:
        return Unmapped(exc.error_class, exc.reason, receipt.record["provider_response"].encode())
    return None


@dataclass(frozen=True)
class _Original:
    """The unmapped event in the shape the dead-letter builder reads a Kafka message in: it comes
    from HTTP, so its 'topic' names the endpoint (which also makes a redrive refuse it)."""

    source: str
    payload: bytes
    key_text: bytes

    def topic(self) -> str:
        return self.source

    def partition(self) -> int:
        return -1

    def offset(self) -> int:
        return -1

    def key(self) -> bytes:
        return self.key_text

    def value(self) -> bytes:
        return self.payload

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)

    def headers(self) -> list[tuple[str, bytes]]:
        return []


class KafkaSink:
    def __init__(self, settings: Settings, ack_timeout_s: float) -> None:
        self.settings = settings.with_overrides(
            extra_kafka={**settings.extra_kafka, "message.timeout.ms": int(ack_timeout_s * 1000)}
        )
        self.ack_timeout_s = ack_timeout_s
        self._producer = TopicProducer(self.settings)
        self._receipts_topic = self.settings.topic("receipts")
        self._letters_topic = self.settings.topic("dead-letters")
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-kafka", daemon=True)
        self._poller.start()

    def _poll(self) -> None:  # delivery reports are served on this thread
        while not self._stop.is_set():
            self._producer.producer.poll(0.05)

    def create_topics(self) -> None:
        ensure_topics(self.settings, ["receipts", "dead-letters"])

    def ready(self) -> bool:
        try:
            metadata = self._producer.producer.list_topics(self._receipts_topic, timeout=2)
        except KafkaException:
            return False
        topic = metadata.topics.get(self._receipts_topic)
        return bool(metadata.brokers) and topic is not None and topic.error is None

    async def deliver(
        self, receipts: list[Receipt], letters: list[Unmapped], *, tenant_id: str, source: str
    ) -> None:
        """Produce every receipt and dead letter of one request (``source``: the endpoint, e.g.
        ``gateway/sendgrid``); return once all are acknowledged."""
        acks = _Acks(asyncio.get_running_loop(), len(receipts) + len(letters))

        def produce(topic: str, key: bytes | None, value: bytes, headers: Any = None) -> None:
            try:
                self._producer.producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=acks.on_delivery
                )
            except BufferError:
                raise Unavailable("the producer's queue is full") from None
            except KafkaException as exc:
                raise Unavailable(str(exc)) from None

        codec = self._producer.codec
        for receipt in receipts:
            produce(
                self._receipts_topic,
                message_key("receipts", receipt.record),
                codec.encode(KIND, receipt.record),
            )
        for event in letters:
            key, value, headers = DeadLetter.of(
                # a real Message cannot say partition/offset -1 (it reads them as unset)
                cast(Message, _Original(source, event.raw, tenant_id.encode())),
                logical_topic="receipts",
                group=GROUP,
                error=PoisonMessage(event.error_class, event.reason),
                tenant_id=tenant_id,
                correlation_id=None,
            ).encode(codec)
            produce(self._letters_topic, key, value, headers)
        try:
            await asyncio.wait_for(acks.done, self.ack_timeout_s + 5)
        except TimeoutError:
            raise Unavailable("Kafka did not acknowledge in time") from None

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is still queued (its reports served on this thread alone), then stop."""
        self._stop.set()
        self._poller.join()
        remaining = self._producer.producer.flush(timeout_s)
        if remaining:
            log.warning("%d records were not acknowledged before shutdown", remaining)


class _Acks:
    """Counts one request's delivery reports (on the producer's thread) and wakes the request
    once, when the last arrives or the first fails."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int) -> None:
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self.remaining = expected
        self.failed = False
        if expected == 0:
            self.done.set_result(None)

    def on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        # delivery reports are served by one thread (KafkaSink._poll): no lock needed
        if self.failed:
            return
        if err is not None:
            self.failed = True
            self.loop.call_soon_threadsafe(self._settle, err.str())
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._settle, None)

    def _settle(self, error: str | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(Unavailable(error))
