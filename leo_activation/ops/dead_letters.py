"""``leo-activation dead-letters list | redrive``: look at what could not be applied, and retry it.

``list`` reads the dead-letter topic from the beginning (read_committed: only dead letters whose
batch committed) and shows, newest last, each one's id, where the message came from, its error
class, reason and tenant. ``redrive ID…`` produces the original key and value bytes back to the
original topic, unchanged, with a header ``leo.redriven-from`` naming the dead letter; use it
after fixing the cause (e.g. registering the tenant a receipt arrived early for). Re-driving is
safe to repeat: every stored id is derived from the message's content, so a message applied
twice is a duplicate, and one that fails again becomes a new dead letter.

A dead letter's id is its offset: the dead-letter topic has a single partition
(:func:`leo_activation.kafka.ensure_topics`). A topic created with several partitions (an older
deployment) names dead letters ``PARTITION:OFFSET`` instead.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from leo_activation.codec import REGISTRY_MAGIC, Codec, SingleObjectCodec, make_codec
from leo_activation.errors import LeoError, PoisonMessage, UsageError, reported
from leo_activation.kafka import (
    INPUT_TOPICS,
    READ_TIMEOUT_S,
    admin_client,
    read_to_end,
    reader,
    topic_partitions,
)
from leo_activation.producers import Headers, TopicProducer
from leo_activation.producers.dead_letters import DeadLetter
from leo_activation.settings import Settings, SettingsError

REDRIVEN_FROM_HEADER = "leo.redriven-from"
REDRIVEN_PARTITION_HEADER = "leo.redriven-from-partition"


def _codec(settings: Settings, value: bytes | None) -> Codec:
    """The codec of whichever framing the engine wrote a dead letter in."""
    if value and value[:1] == REGISTRY_MAGIC:
        if not settings.schema_registry_url:
            raise PoisonMessage(
                "needs_registry", "written in Schema Registry format; set LEO_SCHEMA_REGISTRY_URL"
            )
        return make_codec(settings)
    return SingleObjectCodec()


def read_back(settings: Settings, msg: Message, single: bool) -> DeadLetter:
    """The dead letter in ``msg``; one that cannot be read keeps only its id and why."""
    partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
    ident = str(offset) if single else f"{partition}:{offset}"
    try:
        return DeadLetter.decode(_codec(settings, msg.value()), msg, ident)
    except PoisonMessage as exc:
        return DeadLetter(
            None, None, None, f"unreadable:{exc.error_class}", exc.reason,
            id=ident, position=(partition, offset),
        )  # fmt: skip


def read_all(settings: Settings) -> tuple[list[Message], bool]:
    """Every committed dead letter (partition order, then offset) and whether there is one
    partition."""
    messages = read_to_end(settings, "dead-letters")
    partitions = topic_partitions(admin_client(settings), settings.topic("dead-letters"))
    return messages, len(partitions) == 1


def list_dead_letters(settings: Settings, limit: int | None = None) -> list[DeadLetter]:
    messages, single = read_all(settings)
    letters: deque[DeadLetter] = deque(maxlen=limit)
    for msg in messages:
        letters.append(read_back(settings, msg, single))
    return list(letters)


def _listed(letter: DeadLetter) -> dict[str, Any]:
    """What ``dead-letters list --json`` shows of a dead letter."""
    partition, offset = letter.position or (None, None)
    key = letter.original_key
    return {
        "id": letter.id,
        "partition": partition,
        "offset": offset,
        "original_topic": letter.original_topic,
        "original_partition": letter.original_partition,
        "original_offset": letter.original_offset,
        "error_class": letter.error_class,
        "reason": letter.reason,
        "tenant_id": letter.tenant_id,
        "consumer_group": letter.consumer_group,
        "original_key": None if key is None else key.decode("utf-8", "replace"),
    }


def parse_id(text: str, partitions: int) -> tuple[int, int]:
    """``OFFSET`` (single-partition topic) or ``PARTITION:OFFSET`` -> (partition, offset)."""
    try:
        if ":" in text:
            partition, offset = (int(part) for part in text.split(":", 1))
        else:
            partition, offset = 0, int(text)
    except ValueError:
        raise UsageError(f"dead letter {text!r} is not OFFSET or PARTITION:OFFSET") from None
    if ":" not in text and partitions > 1:
        raise UsageError(
            f"the dead-letter topic has {partitions} partitions: name dead letters "
            "PARTITION:OFFSET, as `dead-letters list` shows them"
        )
    if not 0 <= partition < partitions or offset < 0:
        raise UsageError(f"dead letter {text!r} is outside the dead-letter topic")
    return partition, offset


def fetch(settings: Settings, partition: int, offset: int) -> Message:
    """The dead-letter message at exactly ``partition:offset`` (LeoError if there is none)."""
    topic = settings.topic("dead-letters")
    consumer = reader(settings, "dead-letters")
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    break
                raise LeoError(f"cannot read {topic}: {error}")
            if msg.offset() == offset:
                return msg
            break  # skipped: a commit marker or an aborted batch's dead letter
    finally:
        consumer.close()
    raise LeoError(f"there is no dead letter at {partition}:{offset} on {topic}")


def redrive(settings: Settings, ids: list[str]) -> list[tuple[str, str]]:
    """Put the dead letters back on their source topics, all in one Kafka transaction;
    returns (dead-letter id, source topic) for each."""
    topic = settings.topic("dead-letters")
    partitions = len(topic_partitions(admin_client(settings), topic))
    wanted = [parse_id(text, partitions) for text in ids]
    outgoing: list[tuple[str, str, bytes | None, bytes | None, Headers]] = []
    for partition, offset in wanted:
        ident = str(offset) if partitions == 1 else f"{partition}:{offset}"
        msg = fetch(settings, partition, offset)
        try:
            letter = DeadLetter.decode(_codec(settings, msg.value()), msg, ident)
        except PoisonMessage as exc:
            raise LeoError(f"dead letter {ident} cannot be read: {exc}") from exc
        source = str(letter.original_topic)
        if letter.original_value_truncated:
            raise LeoError(
                f"dead letter {ident} holds only the first {len(letter.original_value or b'')} "
                f"of {letter.original_value_length} bytes of its message (too big to keep "
                "whole): it cannot be re-driven; nothing was re-driven"
            )
        if letter.original_value is None and letter.original_value_length:
            raise LeoError(
                f"dead letter {ident} keeps only the length and hash of its message (a data key "
                "is never copied to the dead-letter topic): it cannot be re-driven; nothing was "
                "re-driven"
            )
        try:
            logical = settings.logical_topic(source)
        except SettingsError:
            logical = None
        if logical not in INPUT_TOPICS:
            raise LeoError(
                f"dead letter {ident} came from {source}, not an input topic of this deployment "
                f"(prefix {settings.topic_prefix!r})"
            )
        # the original headers (a dead letter written before v2 has none), without the marks of
        # an earlier redrive, then this redrive's
        headers = [
            (name, value)
            for name, value in letter.original_headers
            if name not in (REDRIVEN_FROM_HEADER, REDRIVEN_PARTITION_HEADER)
        ] + [
            (REDRIVEN_FROM_HEADER, str(offset).encode()),
            (REDRIVEN_PARTITION_HEADER, str(partition).encode()),
        ]
        outgoing.append((ident, source, letter.original_key, letter.original_value, headers))
    producer = TopicProducer(settings, transactional=True)
    with producer.transaction():
        for _ident, target, key, value, carried in outgoing:
            producer.produce_raw(target, key, value, carried)
    return [(ident, source) for ident, source, *_ in outgoing]


def cli_dead_letters(settings: Settings, args: Any) -> int:
    if args.action == "list":
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be 1 or more")
        with reported("dead-letters list"):
            entries = list_dead_letters(settings, args.limit)
        if args.json:
            print(json.dumps([_listed(e) for e in entries], indent=2))
            return 0
        if not entries:
            print(f"no dead letters on {settings.topic('dead-letters')}")
            return 0
        for e in entries:
            source = f"{e.original_topic}/{e.original_partition}@{e.original_offset}"
            tenant = e.tenant_id or "-"
            print(f"{e.id}\t{source}\t{e.error_class}\ttenant={tenant}\t{e.reason}")
        return 0
    with reported("dead-letters redrive"):
        done = redrive(settings, list(args.offsets))
    for ident, source in done:
        print(f"re-drove dead letter {ident} to {source}")
    return 0
