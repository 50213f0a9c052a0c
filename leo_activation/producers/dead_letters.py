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
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import Message

from leo_activation.codec import Codec
from leo_activation.errors import PoisonMessage

DEAD_LETTER_TOPIC = "dead-letters"  # logical
HEADER_PREFIX = "leo.dlq."
#: topics whose values are secret (data keys): a dead letter keeps their length and hash only
SECRET_VALUE_TOPICS = frozenset({"profile-keys"})
# key + value + headers of a dead letter, with room under message.max.bytes (1,000,000) and the
# topic's max.message.bytes (1,048,588) for the record batch's own framing
MAX_DEAD_LETTER_BYTES = 900_000
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: the engine makes it (:meth:`of`) and writes it (:meth:`encode`); the tools
    read it back (:meth:`decode`). The ``original_*`` coordinates are None only for a dead letter
    that cannot be read back (``error_class`` then says why)."""

    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    error_class: str
    reason: str
    original_key: bytes | None = None
    original_value: bytes | None = None
    original_timestamp_ms: int | None = None
    original_headers: tuple[tuple[str, bytes | None], ...] = ()
    original_value_truncated: bool = False
    original_value_length: int | None = None
    original_value_sha256: str | None = None
    tenant_id: str | None = None
    consumer_group: str | None = None
    logical_topic: str | None = None  # written as a header only (None once read back)
    # Not written: the engine logs it; the original headers or value carry it.
    correlation_id: str | None = None
    # Once read back: its id (``OFFSET``, or ``PARTITION:OFFSET`` on a topic of several
    # partitions) and its own partition and offset on the dead-letter topic.
    id: str | None = None
    position: tuple[int, int] | None = None

    @classmethod
    def of(
        cls,
        msg: Message,
        *,
        logical_topic: str,
        error: PoisonMessage,
        tenant_id: str | None,
        group: str,
        correlation_id: str | None,
    ) -> DeadLetter:
        _, timestamp_ms = msg.timestamp()
        original = msg.value()
        digest = None if original is None else hashlib.sha256(original).hexdigest()
        headers = msg.headers() or []
        items = headers.items() if isinstance(headers, dict) else headers
        return cls(
            original_topic=str(msg.topic()),
            original_partition=int(msg.partition() or 0),
            original_offset=int(msg.offset() or 0),
            error_class=error.error_class,
            reason=error.reason,
            original_key=msg.key(),
            # a data key is never copied to the dead-letter topic, kept for ever: an erasure's
            # tombstone could not reach it there (its length and SHA-256 stay)
            original_value=None if logical_topic in SECRET_VALUE_TOPICS else original,
            original_timestamp_ms=timestamp_ms if timestamp_ms and timestamp_ms > 0 else None,
            original_headers=tuple(
                (name, value.encode() if isinstance(value, str) else value) for name, value in items
            ),
            original_value_length=None if original is None else len(original),
            original_value_sha256=digest,
            tenant_id=tenant_id,
            consumer_group=group,
            logical_topic=logical_topic,
            correlation_id=correlation_id,
        )

    @property
    def source(self) -> tuple[str, int, int]:
        """Topic, partition and offset of the message it stands for."""
        return (
            str(self.original_topic),
            int(self.original_partition or 0),
            int(self.original_offset or 0),
        )

    def encode(self, codec: Codec) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) of the dead-letter message, cut to fit its topic."""
        reason = self.reason[:MAX_REASON_CHARS]
        headers = [
            (HEADER_PREFIX + "original.topic", str(self.original_topic).encode()),
            (HEADER_PREFIX + "original.partition", str(self.original_partition).encode()),
            (HEADER_PREFIX + "original.offset", str(self.original_offset).encode()),
            (HEADER_PREFIX + "logical.topic", str(self.logical_topic).encode()),
            (HEADER_PREFIX + "error.class", self.error_class.encode()),
            (HEADER_PREFIX + "reason", reason.encode()),
        ]
        value = codec.encode("dead_letter", self._record(reason))
        excess = len(self.original_key or b"") + len(value) + _size(headers) - MAX_DEAD_LETTER_BYTES
        if excess > 0:
            original = self.original_value or b""
            keep = max(0, len(original) - excess - 64)  # 64: the record's lengths shrink too
            letter = replace(
                self,
                original_value=original[:keep],
                original_value_truncated=True,
                # the original headers alone are too big: they go as well
                original_headers=() if keep == 0 else self.original_headers,
            )
            headers.append((HEADER_PREFIX + "truncated", b"true"))
            value = codec.encode("dead_letter", letter._record(reason))
        return self.original_key, value, headers

    def _record(self, reason: str) -> dict[str, Any]:
        return {
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "original_key": self.original_key,
            "original_value": self.original_value,
            "original_timestamp_ms": self.original_timestamp_ms,
            "original_headers": [{"name": n, "value": v} for n, v in self.original_headers],
            "original_value_truncated": self.original_value_truncated,
            "original_value_length": self.original_value_length,
            "original_value_sha256": self.original_value_sha256,
            "error_class": self.error_class,
            "reason": reason,
            "tenant_id": self.tenant_id,
            "consumer_group": self.consumer_group,
        }

    @classmethod
    def decode(cls, codec: Codec, msg: Message, ident: str | None = None) -> DeadLetter:
        """The dead letter in ``msg`` (any DeadLetter version); PoisonMessage if unreadable."""
        _kind, r = codec.decode("dead-letters", msg.value())
        return cls(
            original_topic=r["original_topic"],
            original_partition=r["original_partition"],
            original_offset=r["original_offset"],
            error_class=r["error_class"],
            reason=r["reason"],
            original_key=r.get("original_key"),
            original_value=r.get("original_value"),
            original_timestamp_ms=r.get("original_timestamp_ms"),
            original_headers=tuple(
                (str(h["name"]), h["value"]) for h in r.get("original_headers") or []
            ),
            original_value_truncated=bool(r.get("original_value_truncated")),
            original_value_length=r.get("original_value_length"),
            original_value_sha256=r.get("original_value_sha256"),
            tenant_id=r.get("tenant_id"),
            consumer_group=r.get("consumer_group"),
            id=ident,
            position=(int(msg.partition() or 0), int(msg.offset() or 0)),
        )


def _size(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value) for name, value in headers)
