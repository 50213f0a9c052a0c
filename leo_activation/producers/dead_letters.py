"""Dead letters: a message that could not be applied, with its coordinates and the reason.

The value is a ``DeadLetter`` Avro record holding the original key, bytes and headers (so it can
be re-driven unchanged, correlation header included); the same facts are in headers for tools
that only read headers.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from leo_activation.codec import Codec
from leo_activation.errors import PoisonMessage

HEADER_PREFIX = "leo.dlq."


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
    record = {
        "original_topic": msg.topic(),
        "original_partition": msg.partition(),
        "original_offset": msg.offset(),
        "original_key": msg.key(),
        "original_value": msg.value(),
        "original_timestamp_ms": timestamp_ms if timestamp_ms and timestamp_ms > 0 else None,
        "original_headers": _original_headers(msg),
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
    return msg.key(), codec.encode("dead_letter", record), headers


def _original_headers(msg: Message) -> list[dict[str, Any]]:
    headers = msg.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    return [
        {"name": name, "value": value.encode() if isinstance(value, str) else value}
        for name, value in items
    ]
