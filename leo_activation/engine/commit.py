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

from leo_activation import db
from leo_activation.codec import Codec
from leo_activation.engine.apply import incapable
from leo_activation.engine.handler import Outgoing
from leo_activation.errors import LeoError
from leo_activation.kafka import message_key, new_transactional_id
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


# Errors the same batch would meet again however often it is read again: the cluster refuses
# what the product needs (an ACL missing) or a record it cannot take. Everything else the
# transactional API raises (retriable, abortable, fatal: fenced, INVALID_TXN_STATE) is recovered
# from by reading the batch again, on a new producer when the old one cannot go on.
_FATAL_FOR_THE_CONSUMER = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_CONFIG,
    }
)


class Committer:
    """Owns the engine's transactional producer (replaced, under the same transactional id,
    whenever it cannot go on)."""

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
        self.transactional_id = new_transactional_id()
        self._wedged: list[Producer] = []  # producers whose API call hung (see _send_offsets)
        self.out = self._producer()

    def _producer(self) -> TopicProducer:
        """A new transactional producer, waiting (with backoff) while the cluster is away."""
        delay = 0.5
        while True:
            try:
                return TopicProducer(
                    self.settings,
                    codec=self.codec,
                    transactional=True,
                    transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                    transactional_id=self.transactional_id,
                )
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and error.code() in _FATAL_FOR_THE_CONSUMER:
                    raise LeoError(f"Kafka refused the transactional producer: {error}") from None
                log.warning("Kafka transactional producer not ready (%s); retrying", error)
                self._retrying()
                time.sleep(delay)
                delay = min(delay * 2, 10)

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
        committing = False
        try:
            producer.begin_transaction()
            for d in dead:
                key, value, headers = d.encode(self.codec)
                out.produce_raw(self.settings.topic(DEAD_LETTER_TOPIC), key, value, headers)
            for output in outputs:
                for o in output():
                    out.produce_raw(
                        self.settings.topic(o.topic, output=True),
                        message_key(o.topic, o.record),
                        None if o.tombstone else self.codec.encode(o.kind, o.record),
                    )
            _send_offsets(producer, offsets, consumer.consumer_group_metadata())
            committing = True
            self._commit_transaction(producer)
        except _ProducerWedged:
            # Its blocked call still runs in a helper thread: keep the producer referenced (never
            # destroyed under it) and go on with a new one, which fences it and aborts the stuck
            # transaction; this batch is re-applied (idempotent).
            self._wedged.append(producer)
            self.out = self._producer()
            self._retrying()
            log.error("Kafka transaction API hung; replaced the producer, batch will be re-applied")
            return False
        except KafkaException as exc:
            error = exc.args[0]
            self._abandon(producer, error)
            if isinstance(error, KafkaError) and error.code() in _FATAL_FOR_THE_CONSUMER:
                raise LeoError(f"Kafka transaction failed: {error}") from None
            self._retrying()
            if committing and _committed(consumer, offsets):
                # the commit reached the coordinator before the error came back: the batch is in
                log.warning("Kafka commit reported %s but the offsets are committed", error)
                return True
            log.warning("Kafka transaction aborted (%s); batch will be read again", error)
            return False
        except psycopg.Error as exc:  # an output's database read failed: nothing is committed
            self._abandon(producer, exc)
            if db.classify(exc) is db.Fault.INCAPABLE:
                raise incapable(exc) from None
            log.warning("database read inside the Kafka transaction failed (%s); re-applying", exc)
            return False
        return True

    def _abandon(self, producer: Producer, cause: object) -> None:
        """Abort the open transaction, if any; a producer that cannot abort (fatal: fenced,
        INVALID_TXN_STATE after a broker restart) is replaced: the new one, under the same
        transactional id, aborts what the old one left open."""
        fatal = isinstance(cause, KafkaError) and cause.fatal()
        if not fatal:
            try:
                producer.abort_transaction(60)
                return
            except KafkaException as exc:
                cause = exc.args[0]
        log.warning("Kafka producer cannot go on (%s); replacing it", cause)
        producer.purge()  # its undelivered records belong to the aborted transaction
        self.out = self._producer()

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


def _committed(consumer: Consumer, offsets: list[TopicPartition]) -> bool:
    """Whether the group's committed offsets are ``offsets``: then the transaction carrying them
    committed. Waits while they are unstable (a transaction on them still open), within the
    transaction timeout, after which the broker has decided either way."""
    deadline = time.monotonic() + TRANSACTION_TIMEOUT_MS / 1000 + 30
    want = {(tp.topic, tp.partition): tp.offset for tp in offsets}
    while True:
        try:
            got = consumer.committed([TopicPartition(t, p) for t, p in want], timeout=10)
            return all(want[(tp.topic, tp.partition)] == tp.offset for tp in got)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise LeoError(f"the group's committed offsets stay unreadable: {exc}") from None
            log.warning("committed offsets not readable yet (%s); waiting", exc.args[0])
            time.sleep(1)


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
