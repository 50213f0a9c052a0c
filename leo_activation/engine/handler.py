"""The contract between the engine and the per-topic handlers: what a handler is given (decoded
envelopes of one tenant, inside that tenant's transaction) and what it returns."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import psycopg

from leo_activation.errors import PoisonMessage

Connection = psycopg.Connection[Any]


class Envelope(NamedTuple):
    """A decoded, validated message and where it came from (a NamedTuple: immutable, and cheaper
    to build per message than a frozen dataclass)."""

    topic: str  # logical topic
    partition: int
    offset: int
    key: bytes | None
    kind: str
    record: dict[str, Any]
    tenant_id: uuid.UUID
    correlation_id: str | None
    # the COPY text line the topic's handler prepared for it when it was decoded (Row.line)
    row: bytes | None = None
    # the Kafka timestamp (ms): when it was published, which decides its tenant's status for it
    published_ms: int = 0
    # what apply reads of the row besides writing it (Row.key)
    row_key: tuple[Any, ...] | None = None


class Row(NamedTuple):
    """What a handler prepares for a message when it is decoded: the line ``apply`` COPYs into
    its stage (``bulk.copy_line`` of the row's values; None for a message ``apply`` writes with
    a statement of its own, an erasure say), and the few values ``apply`` reads of it (a profile
    upsert's profile, version and content hash for set-based checks, an erasure's profile)."""

    line: bytes | None
    key: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record a handler emits, encoded with the topic's contract and keyed by the topic's rule,
    in the same Kafka transaction as the batch offsets. A tombstone (``kind`` is ``TOMBSTONE``)
    has no value: ``record`` holds only its key's fields, and a compacted topic drops what the
    key held."""

    topic: str  # logical
    kind: str
    record: Mapping[str, Any]

    @property
    def tombstone(self) -> bool:
        return self.kind == TOMBSTONE


#: the kind of a message with no value on a compacted topic (emitted or read)
TOMBSTONE = "tombstone"


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Work too large to hold the apply transaction open for (e.g. tag a sealed snapshot's
    members): run in its own transaction after the apply transactions committed and before the
    Kafka transaction. The offsets commit only after it ran, so a crash re-delivers the message
    that asked for it; it must be idempotent."""

    run: Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class Emit:
    """Outputs read back from the database while the Kafka transaction is open, so that they
    are never all in memory at once."""

    run: Callable[[Connection], Iterator[Outgoing]]


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """Run against the database once the Kafka transaction committed (e.g. mark a fan-out
    done), in its own transaction."""

    run: Callable[[Connection], None]


Later = FollowUp | Emit | AfterCommit
Rejected = tuple[Envelope, PoisonMessage]


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    # held back by the handler's gate: read and judged again later
    waiting: list[Envelope] = field(default_factory=list)
    # keyed, so that two triggers of the same work run it once
    later: dict[Hashable, Later] = field(default_factory=dict)

    def merge(self, other: ApplyResult) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.waiting += other.waiting
        self.later.update(other.later)

    def of(self, phase: type[Later]) -> list[Any]:
        """The deferred work of one kind, in the order it was asked for."""
        return [w.run for w in self.later.values() if isinstance(w, phase)]


class Gate(Protocol):
    """Holds a handler's messages back while an upstream topic still has unread messages
    published at or before them, then admits or rejects each (e.g. by its tenant's status)."""

    #: the logical topic waited for; the engine must consume it too
    upstream: str

    def judge(
        self, conn: Connection, envelopes: Sequence[Envelope], horizon_ms: int | None
    ) -> tuple[list[Envelope], list[Envelope], list[Rejected]]:
        """(admitted, waiting, rejected) of one tenant's messages, in its transaction.
        ``horizon_ms``: the publish time of the earliest unread upstream message (None: none)."""
        ...


@runtime_checkable
class ReadsTombstones(Protocol):
    """A handler of a compacted topic: a message with no value is a tombstone, not a poison."""

    def tombstone(self, key: bytes | None) -> dict[str, Any]:
        """The record of a tombstone (its key's fields); PoisonMessage for a malformed key."""
        ...


class Handler(Protocol):
    """Applies one topic's messages for one tenant inside that tenant's transaction."""

    topic: str  # logical
    gate: Gate | None

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> Row | None:
        """What ``apply`` will write and read of this message (``Envelope.row`` and
        ``Envelope.row_key``), or None. Called when the message is decoded, in the thread that
        decodes the next batch while the previous one is applied: per-message work here overlaps
        the database's. ``json_fields``: the JSON text fields validation parsed (name ->
        object)."""
        ...

    def apply(
        self, conn: Connection, tenant_id: uuid.UUID, batch: list[Envelope]
    ) -> ApplyResult: ...
