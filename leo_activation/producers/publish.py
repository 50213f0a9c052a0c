"""``leo-activation publish --topic T FILE``: JSON Lines in, Avro messages out.

Every line is parsed and validated before anything is produced; the first bad line is reported
with its number and nothing is sent. The good file is then produced in one Kafka transaction, so
a failure half-way leaves nothing visible to read-committed consumers either.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from leo_activation.contracts import from_json
from leo_activation.errors import LeoError, UsageError
from leo_activation.producers import TopicProducer
from leo_activation.settings import Settings
from leo_activation.topics import INPUT_TOPICS, ensure_topics


def read_messages(topic: str, stream: IO[str], source: str) -> list[tuple[str, dict[str, Any]]]:
    messages = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            messages.append(from_json(topic, json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise LeoError(f"{source}:{number}: {exc}; nothing was published") from None
    return messages


def publish(
    settings: Settings, logical_topic: str, messages: list[tuple[str, dict[str, Any]]]
) -> None:
    ensure_topics(settings)
    producer = TopicProducer(settings, transactional=True)
    producer.producer.begin_transaction()
    try:
        for kind, record in messages:
            producer.send(logical_topic, kind, record)
        producer.flush()
        producer.producer.commit_transaction(120)
    except BaseException:
        producer.producer.abort_transaction(60)
        raise


def cli_publish(settings: Settings, args: Any) -> int:
    logical = settings.logical_topic(settings.resolve_topic(args.topic))
    if logical not in INPUT_TOPICS:
        raise UsageError(f"topic {args.topic!r} is written by this product, not published to")
    if args.file == "-":
        messages = read_messages(logical, sys.stdin, "<stdin>")
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{args.file}: no such file")
        with path.open(encoding="utf-8") as stream:
            try:
                messages = read_messages(logical, stream, args.file)
            except UnicodeDecodeError as exc:
                raise LeoError(f"{args.file}: not UTF-8 ({exc}); nothing was published") from None
    publish(settings, logical, messages)
    print(f"published {len(messages)} messages to {settings.topic(logical)}")
    return 0
