"""``leo-activation publish --topic T FILE``: JSON Lines in, Avro messages out.

Every line is parsed and validated before anything is produced; every bad line is reported on
stderr as ``FILE:LINE: reason`` (one line each, whatever is wrong with it) and nothing is sent.
The good file is then produced in order, in short Kafka transactions of ``CHUNK_MESSAGES``
messages, each all-or-nothing for read-committed consumers. A failure half-way leaves the chunks
before it committed and says how many messages they hold; publishing the whole file again is the
way to resume, and safe: every message's identity is deterministic, so what consumers applied
already is absorbed as a duplicate.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from leo_activation import progress
from leo_activation.contracts import MAX_JSON_DEPTH, from_json, json_depth
from leo_activation.errors import LeoError, UsageError, first_line
from leo_activation.kafka import INPUT_TOPICS, ensure_topics
from leo_activation.producers import TopicProducer
from leo_activation.producers.profile_keys import KeyRing
from leo_activation.settings import Settings


def read_messages(
    topic: str, stream: Iterable[str], source: str
) -> list[tuple[str, dict[str, Any]]]:
    messages = []
    bad: list[str] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            messages.append(_parse_line(topic, line))
        except Exception as exc:  # any input at all: a line's fault is reported, never a traceback
            bad.append(f"{source}:{number}: {_one_line(exc)}")
    if bad:
        for report in bad[:-1]:
            print(report, file=sys.stderr)
        # the last one is the CLI's one-line error, so a single bad line is a single line
        count = f" ({len(bad)} bad lines)" if len(bad) > 1 else ""
        raise LeoError(f"{bad[-1]}; nothing was published{count}")
    return messages


def _parse_line(topic: str, line: str) -> tuple[str, dict[str, Any]]:
    # json.loads recurses: a deeply nested line is refused before it is parsed
    if json_depth(line) > MAX_JSON_DEPTH + 1:
        raise ValueError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return from_json(topic, json.loads(line))


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, ValueError):  # not one of ours: say what kind of failure it was
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


# A publish that dies inside a transaction blocks every read-committed consumer of the topic
# until the broker aborts it, after this long: short transactions keep that wait short.
TRANSACTION_TIMEOUT_MS = 60_000
# Messages per transaction: produced and committed in seconds, far inside the timeout.
CHUNK_MESSAGES = 5_000


def publish(
    settings: Settings,
    logical_topic: str,
    messages: list[tuple[str, dict[str, Any]]],
    *,
    chunk: int = CHUNK_MESSAGES,
) -> None:
    """Produce ``messages`` in order, ``chunk`` to a transaction; on a failure, ``LeoError``
    saying how many were committed (always a prefix of ``messages``). Profile upserts are
    sealed first (``producers.profile_keys``): their personal fields never leave in plaintext."""
    ensure_topics(settings)
    committed = 0
    try:
        ring = KeyRing.load(settings) if logical_topic == "profile-changes" else None
        producer = TopicProducer(
            settings, transactional=True, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS
        )
        lines = iter(progress.track(messages, "publishing", total=len(messages), unit="lines"))
        while part := list(itertools.islice(lines, chunk)):
            outgoing = (
                ring.seal_all(part)
                if ring is not None
                else ((logical_topic, kind, record) for kind, record in part)
            )
            with producer.transaction():
                for topic, kind, record in outgoing:
                    producer.send(topic, kind, record)
            committed += len(part)
    except (KafkaException, LeoError) as exc:
        raise LeoError(
            f"publishing failed ({first_line(exc)}): the first {committed} of {len(messages)} "
            "messages are committed, the rest not; publish the whole input again to resume "
            "(what was already published is absorbed as a duplicate)"
        ) from None


def cli_publish(settings: Settings, args: Any) -> int:
    logical = settings.logical_topic(settings.resolve_topic(args.topic))
    if logical not in INPUT_TOPICS or logical == "profile-keys":
        raise UsageError(f"topic {args.topic!r} is written by this product, not published to")
    if args.file == "-":
        messages = read_messages(logical, sys.stdin, "<stdin>")
    else:
        path = Path(args.file)
        # a pipe (<(…), a FIFO) or a device is read like a file; only what cannot be is refused
        if path.is_dir():
            raise UsageError(f"{args.file}: is a directory, not a JSON Lines file")
        if not path.exists():
            raise UsageError(f"{args.file}: no such file")
        try:
            stream = path.open(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.file}: cannot be read ({exc.strerror})") from None
        with stream:
            lines = progress.track(
                stream, "validating", total=progress.count_lines(args.file), unit="lines"
            )
            try:
                messages = read_messages(logical, lines, args.file)
            except UnicodeDecodeError as exc:
                raise LeoError(f"{args.file}: not UTF-8 ({exc}); nothing was published") from None
    if not messages:  # an empty file (or /dev/null) asks nothing of the cluster
        print(f"{args.file}: no messages, nothing published")
        return 0
    publish(settings, logical, messages)
    print(f"published {len(messages)} messages to {settings.topic(logical)}")
    return 0
