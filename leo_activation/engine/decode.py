"""Step 2 of a batch: Kafka messages -> validated envelopes grouped by tenant, and dead letters."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from leo_activation import contracts
from leo_activation.codec import Codec, SingleObjectCodec
from leo_activation.engine.handler import TOMBSTONE, Envelope, Handler, ReadsTombstones
from leo_activation.engine.native import NativeDecoder, Prepared, native_decoder
from leo_activation.errors import PoisonMessage
from leo_activation.producers.dead_letters import DeadLetter

CORRELATION_HEADER = "leo.correlation_id"
Coords = tuple[str, int, int]  # topic, partition, offset
Partition = tuple[str, int]  # physical topic, partition


class Span(NamedTuple):
    """What a batch holds of one partition: the offsets of its messages run from ``first`` to
    ``last``, ``size`` of them (the engine's bookkeeping is per partition, not per message)."""

    first: int
    last: int
    size: int


@dataclass
class Polled:
    """A polled batch after step 2: its envelopes by tenant, and what is already dead."""

    messages: list[Message]
    by_tenant: dict[uuid.UUID, list[Envelope]]
    dead: list[DeadLetter]
    raw: dict[Coords, Message]  # (logical topic, partition, offset) -> message
    spans: dict[Partition, Span]  # by physical partition

    def message(self, e: Envelope) -> Message:
        return self.raw[(e.topic, e.partition, e.offset)]


# a tenant's id from its text, made once per tenant rather than per message
_tenant_uuid = functools.lru_cache(maxsize=4096)(uuid.UUID)


class Decoder:
    """Decodes and validates messages of the physical topics in ``logical_by_physical``.

    With the native extension (``native``, on by default) a batch's messages in single-object
    framing are decoded natively first; those it leaves (poison, forms it does not take, other
    framings) take the Python path one by one."""

    def __init__(
        self,
        codec: Codec,
        handlers: Sequence[Handler],
        logical_by_physical: Mapping[str, str],
        group: str,
        *,
        native: bool = True,
    ) -> None:
        self.codec = codec
        self.group = group
        self.handler_by_topic = {h.topic: h for h in handlers}
        self.logical_by_physical = dict(logical_by_physical)
        rules: dict[str, Any] = {}
        for h in handlers:
            rules.update(getattr(h, "native_rules", {}))
        self.native: NativeDecoder | None = (
            native_decoder(codec.catalog, rules)
            if native and isinstance(codec, SingleObjectCodec)
            else None
        )

    def decode(self, logical: str, msg: Message) -> Envelope:
        """Decode and validate one message (raises PoisonMessage)."""
        handler = self.handler_by_topic.get(logical)
        json_fields: dict[str, Any] = {}
        if msg.value() is None and isinstance(handler, ReadsTombstones):
            kind, record = TOMBSTONE, handler.tombstone(msg.key())
        else:
            kind, record = self.codec.decode(logical, msg.value())
            json_fields = contracts.validate(kind, record)
        tenant = record.get("tenant_id")
        if tenant is None:
            raise PoisonMessage("missing_tenant", "tenant_id is missing")
        envelope = _envelope(
            logical,
            msg,
            kind=kind,
            record=record,
            tenant_id=tenant if isinstance(tenant, uuid.UUID) else uuid.UUID(str(tenant)),
            correlation_id=record.get("correlation_id") or header_correlation(msg) or None,
        )
        row = None if handler is None else handler.prepare(envelope, json_fields)
        return envelope if row is None else envelope._replace(row=row.line, row_key=row.key)

    def dead_letter(
        self,
        msg: Message,
        logical: str,
        error: PoisonMessage,
        tenant: str | None,
        correlation_id: str | None,
    ) -> DeadLetter:
        return DeadLetter.of(
            msg, logical_topic=logical, error=error, tenant_id=tenant, group=self.group,
            correlation_id=correlation_id,
        )  # fmt: skip

    def prepare_native(
        self,
        logicals: list[str],
        messages: list[Message],
        partitions: list[int],
        offsets: list[int],
    ) -> list[Prepared | None]:
        """What the native decoder prepared for each message (None: the Python path decides)."""
        if self.native is None:
            return [None] * len(messages)
        handled = self.handler_by_topic
        return self.native.prepare(
            logicals,
            [m.value() if t in handled else None for t, m in zip(logicals, messages, strict=True)],
            partitions,
            offsets,
            [header_correlation(m) for m in messages],
        )

    def decode_batch(self, messages: list[Message]) -> Polled:
        by_tenant: dict[uuid.UUID, list[Envelope]] = defaultdict(list)
        dead: list[DeadLetter] = []
        raw: dict[Coords, Message] = {}
        # each message's coordinates, taken once
        logicals, partitions, offsets = [], [], []
        spans: dict[Partition, list[int]] = {}  # -> [first, last, size]
        for msg in messages:  # messages only: the engine took the consumer's error events out
            topic, partition, offset = (
                str(msg.topic()),
                int(msg.partition() or 0),
                int(msg.offset() or 0),
            )
            logicals.append(self.logical_by_physical[topic])
            partitions.append(partition)
            offsets.append(offset)
            span = spans.get((topic, partition))
            if span is None:
                spans[(topic, partition)] = [offset, offset, 1]
            else:
                span[0], span[1], span[2] = min(span[0], offset), max(span[1], offset), span[2] + 1
        prepared = self.prepare_native(logicals, messages, partitions, offsets)
        for msg, logical, partition, offset, native in zip(
            messages, logicals, partitions, offsets, prepared, strict=True
        ):
            if native is None:
                try:
                    envelope = self.decode(logical, msg)
                except PoisonMessage as poison:
                    dead.append(
                        self.dead_letter(msg, logical, poison, None, header_correlation(msg))
                    )
                    continue
            else:
                kind, tenant, correlation, line, key = native
                # the row holds what the handler needs of the record
                envelope = Envelope(
                    logical, partition, offset, msg.key(), kind, {}, _tenant_uuid(tenant),
                    correlation, line, timestamp_ms(msg), key,
                )  # fmt: skip
            raw[(logical, partition, offset)] = msg
            by_tenant[envelope.tenant_id].append(envelope)
        return Polled(messages, by_tenant, dead, raw, {k: Span(*v) for k, v in spans.items()})


def _envelope(
    logical: str,
    msg: Message,
    *,
    kind: str,
    record: dict[str, Any],
    tenant_id: uuid.UUID,
    correlation_id: str | None,
) -> Envelope:
    return Envelope(
        topic=logical,
        partition=int(msg.partition() or 0),
        offset=int(msg.offset() or 0),
        key=msg.key(),
        kind=kind,
        record=record,
        tenant_id=tenant_id,
        correlation_id=correlation_id,
        published_ms=timestamp_ms(msg),
    )


def header_correlation(msg: Message) -> str | None:
    value = dict(msg.headers() or []).get(CORRELATION_HEADER)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def timestamp_ms(msg: Message) -> int:
    kind, value = msg.timestamp()
    return int(value) if kind != TIMESTAMP_NOT_AVAILABLE else 0
