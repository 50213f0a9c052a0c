"""What the consumer reports besides messages: an error librdkafka recovers from by itself (a
broker or the group coordinator gone for a while: a broker restarting, a leader moving) never
stops ``consume``; one it cannot recover from (the cluster refuses the group or a topic, a fatal
error) stops it with one line. The cluster battery (``test_cluster_faults.py``) meets the first
kind for real: a coordinator SIGKILLed while a consumer fetched its group's offsets."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, Message

from leo_activation.engine.loop import is_message
from leo_activation.errors import LeoError

# what a consumer said as its group coordinator was SIGKILLed during a rebalance
OFFSETS_NOT_FETCHED = (
    'Failed to fetch committed offsets for partitions in group "g": Local: Broker transport failure'
)
TRANSIENT = [
    KafkaError(KafkaError._TRANSPORT, OFFSETS_NOT_FETCHED),
    KafkaError(KafkaError._ALL_BROKERS_DOWN),
    KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE),
    KafkaError(KafkaError.NOT_COORDINATOR),
    KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION),
    KafkaError(KafkaError._MAX_POLL_EXCEEDED),
]
STOPS = [
    KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED),
    KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART),
    KafkaError(KafkaError._FENCED, fatal=True),
]


def test_a_message_is_a_message_and_the_end_of_a_partition_is_skipped() -> None:
    assert is_message(Message(topic="t", partition=0, offset=1, value=b"v"))
    end = KafkaError(KafkaError._PARTITION_EOF)
    assert not is_message(Message(topic="t", partition=0, error=end))


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: e.name())
def test_an_error_librdkafka_recovers_from_is_logged_and_consumption_goes_on(
    error: KafkaError, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="leo_activation.engine.loop")
    assert not is_message(Message(error=error))
    [line] = [r.getMessage() for r in caplog.records]
    assert error.str() in line


@pytest.mark.parametrize("error", STOPS, ids=lambda e: e.name())
def test_an_error_retrying_cannot_cure_stops_the_consumer_in_one_line(error: KafkaError) -> None:
    with pytest.raises(LeoError) as stopped:
        is_message(Message(error=error))
    assert str(stopped.value) == f"Kafka consumer error: {error.str()}"
