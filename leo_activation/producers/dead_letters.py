"""Dead letters: a message that could not be applied, with its coordinates and the reason.

The value is a ``DeadLetter`` Avro record holding the original key, bytes and headers (so it can
be re-driven unchanged, correlation header included); the same facts are in headers for tools
that only read headers.

A dead letter must fit where it goes, whatever arrived: a message the broker accepted can be too
big to carry whole inside a DeadLetter (the producer's ``message.max.bytes`` default is 1,000,000
bytes). Then its value is cut and marked truncated, its whole length and SHA-256 kept (new
DeadLetter fields, so tools reading the record see them) — and a redrive refuses it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from confluent_kafka import Message

from leo_activation.codec import Codec
from leo_activation.errors import PoisonMessage

DEAD_LETTER_TOPIC = "dead-letters"  # logical
HEADER_PREFIX = "leo.dlq."
# key + value + headers of a dead letter, with room under message.max.bytes (1,000,000) and the
# topic's max.message.bytes (1,048,588) for the record batch's own framing
MAX_DEAD_LETTER_BYTES = 900_000


def dead_letter(
    codec: Codec,
    msg: Message,
    *,
    logical_topic: str,
    group: str,
    error: PoisonMessage,
    tenant_id: str | None,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the dead letter for ``msg``."""
    _, timestamp_ms = msg.timestamp()
    original = msg.value()
    record: dict[str, Any] = {
        "original_topic": msg.topic(),
        "original_partition": msg.partition(),
        "original_offset": msg.offset(),
        "original_key": msg.key(),
        "original_value": msg.value(),
        "original_timestamp_ms": timestamp_ms if timestamp_ms and timestamp_ms > 0 else None,
        "original_headers": _original_headers(msg),
        "original_value_truncated": False,
        "original_value_length": None if original is None else len(original),
        "original_value_sha256": None if original is None else hashlib.sha256(original).hexdigest(),
        "error_class": error.error_class,
        "reason": error.reason[:2000],
        "tenant_id": tenant_id,
        "consumer_group": group,
    }
    headers = [
        (HEADER_PREFIX + "original.topic", str(msg.topic()).encode()),
        (HEADER_PREFIX + "original.partition", str(msg.partition()).encode()),
        (HEADER_PREFIX + "original.offset", str(msg.offset()).encode()),
        (HEADER_PREFIX + "logical.topic", logical_topic.encode()),
        (HEADER_PREFIX + "error.class", error.error_class.encode()),
        (HEADER_PREFIX + "reason", error.reason[:2000].encode()),
    ]
    value = codec.encode("dead_letter", record)
    excess = len(msg.key() or b"") + len(value) + _size(headers) - MAX_DEAD_LETTER_BYTES
    if excess > 0:
        keep = max(0, len(original or b"") - excess - 64)  # 64: the record's lengths shrink too
        if keep == 0:  # the original headers alone are too big: they go as well
            record["original_headers"] = []
        record["original_value"] = (original or b"")[:keep]
        record["original_value_truncated"] = True
        headers.append((HEADER_PREFIX + "truncated", b"true"))
        value = codec.encode("dead_letter", record)
    return msg.key(), value, headers


def _size(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value) for name, value in headers)


def _original_headers(msg: Message) -> list[dict[str, Any]]:
    headers = msg.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    return [
        {"name": name, "value": value.encode() if isinstance(value, str) else value}
        for name, value in items
    ]
