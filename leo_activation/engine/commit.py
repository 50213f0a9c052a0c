"""Step 4 of a batch: its dead letters, the records its handlers emitted and its offsets, in one
Kafka transaction, so that offsets are committed only after the database committed and outputs
are produced exactly when offsets are."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from leo_activation.codec import Codec
from leo_activation.engine.handler import Outgoing
from leo_activation.errors import LeoError
from leo_activation.producers import TopicProducer
from leo_activation.producers.dead_letters import DEAD_LETTER_TOPIC, DeadLetter
from leo_activation.settings import Settings

log = logging.getLogger(__name__)

# The engine's transactions only carry one batch's outputs and offsets (seconds at most). If the
# process dies inside one, the broker aborts it after this long; until then the group's offsets
# for its partitions are unreadable and a restarted consumer waits (the producers' default of
# 15 minutes, sized for large ``publish`` transactions, would stall recovery that long).
TRANSACTION_TIMEOUT_MS = 60_000
SEND_OFFSETS_TIMEOUT_S = 30


class Committer:
    """Owns the engine's transactional producer."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        group: str,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.group = group
        self.on_retry = on_retry
        self.out = self._producer()
        self._wedged: list[Producer] = []  # producers whose API call hung (see _send_offsets)

    def _producer(self) -> TopicProducer:
        return TopicProducer(
            self.settings,
            codec=self.codec,
            transactional=True,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )

    def commit(
        self,
        consumer: Consumer,
        *,
        offsets: list[TopicPartition],
        dead: list[DeadLetter],
        outputs: Iterable[Callable[[], Iterator[Outgoing]]] = (),
    ) -> bool:
        """Produce outputs and commit offsets atomically; False if aborted (batch rewound).
        ``outputs`` are read (from the database) while the transaction is open."""
        out = self.out
        producer = out.producer
        try:
            producer.begin_transaction()
            for d in dead:
                key, value, headers = d.encode(self.codec)
                out.produce_raw(self.settings.topic(DEAD_LETTER_TOPIC), key, value, headers)
            for output in outputs:
                for o in output():
                    out.send(o.topic, o.kind, o.record)
            _send_offsets(producer, offsets, consumer.consumer_group_metadata())
            self._commit_transaction(producer)
        except _ProducerWedged:
            # Its blocked call still runs in a helper thread: keep the producer referenced (never
            # destroyed under it) and go on with a new one. The broker aborts the stuck
            # transaction after TRANSACTION_TIMEOUT_MS; this batch is re-applied (idempotent).
            self._wedged.append(producer)
            self.out = self._producer()
            self._retrying()
            log.error("Kafka transaction API hung; replaced the producer, batch will be re-applied")
            return False
        except KafkaException as exc:
            error = exc.args[0]
            # a retriable error here is send_offsets giving up on an unavailable coordinator
            if isinstance(error, KafkaError) and (error.txn_requires_abort() or error.retriable()):
                producer.abort_transaction(60)
                self._retrying()
                log.warning("Kafka transaction aborted (%s); batch will be re-applied", error)
                return False
            raise LeoError(f"Kafka transaction failed: {exc}") from exc
        except psycopg.Error as exc:  # an output's database read failed: nothing is committed
            producer.abort_transaction(60)
            log.warning("database read inside the Kafka transaction failed (%s); re-applying", exc)
            return False
        return True

    def _retrying(self) -> None:
        if self.on_retry is not None:
            self.on_retry("kafka")

    def _commit_transaction(self, producer: Producer) -> None:
        """Commit, retrying while the broker says the error is retriable (e.g. it restarts)."""
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
                self._retrying()
                time.sleep(delay)
                delay = min(delay * 2, 10)


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
