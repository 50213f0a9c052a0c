"""The contract between the engine and the per-topic handlers: what a handler is given (decoded
envelopes of one tenant, inside that tenant's transaction) and what it returns."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import psycopg

from leo_activation.codec import Codec
from leo_activation.errors import PoisonMessage
from leo_activation.settings import Settings


class Envelope(NamedTuple):
    """A decoded, validated message and where it came from (a NamedTuple: immutable, and built
    per message five times faster than a frozen dataclass)."""

    topic: str  # logical topic
    partition: int
    offset: int
    key: bytes | None
    kind: str
    record: dict[str, Any]
    tenant_id: uuid.UUID
    correlation_id: str | None
    # what the topic's handler prepared for it when it was decoded (Handler.prepare)
    row: tuple[Any, ...] | None = None
    # the Kafka timestamp (ms): when it was published, which decides its tenant's status for it
    published_ms: int = 0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message a handler emits, produced in the same Kafka transaction as the batch offsets."""

    topic: str  # physical
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


# Produces messages from the database after the apply transaction committed (own transaction).
OutgoingStream = Callable[[psycopg.Connection[Any]], Iterator[Outgoing]]


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    rejected: list[tuple[Envelope, PoisonMessage]] = field(default_factory=list)
    # messages of a tenant not registered (yet): the engine decides whether they wait or die
    unregistered: list[Envelope] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    # large outputs read back from the database while the Kafka transaction is open, so they are
    # never all in memory; keyed so that two triggers of the same work produce it once
    streams: dict[Hashable, OutgoingStream] = field(default_factory=dict)
    # run against the database after the apply transactions committed and before the Kafka
    # transaction, each in its own transaction: work too large to hold the apply transaction
    # open for (e.g. tag a sealed snapshot's members). The offsets commit only after they ran,
    # so a crash re-delivers the message that asked for them; they must be idempotent.
    follow_ups: dict[Hashable, Callable[[psycopg.Connection[Any]], None]] = field(
        default_factory=dict
    )
    # run against the database after the Kafka transaction committed (e.g. mark a fan-out done)
    after_commit: list[Callable[[psycopg.Connection[Any]], None]] = field(default_factory=list)
    # (applied, duplicates) per logical topic; the engine fills it from each handler's result
    by_topic: dict[str, tuple[int, int]] = field(default_factory=dict)

    def merge(self, other: ApplyResult) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        for topic, (applied, duplicates) in other.by_topic.items():
            before = self.by_topic.get(topic, (0, 0))
            self.by_topic[topic] = (before[0] + applied, before[1] + duplicates)
        self.rejected += other.rejected
        self.unregistered += other.unregistered
        self.outgoing += other.outgoing
        self.streams.update(other.streams)
        self.follow_ups.update(other.follow_ups)
        self.after_commit += other.after_commit


@dataclass(frozen=True)
class ApplyContext:
    settings: Settings
    codec: Codec


class Handler(Protocol):
    """Applies one topic's messages for one tenant inside that tenant's transaction."""

    topic: str
    #: the engine refuses messages of unknown or disabled tenants before calling apply
    requires_active_tenant: bool

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The row ``apply`` will write for this message (``Envelope.row``), or None. Called when
        the message is decoded, in the thread that decodes the next batch while the previous one
        is applied: per-message work here overlaps the database's. ``json_fields``: the JSON
        text fields validation parsed (name -> object)."""
        ...

    def apply(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
        ctx: ApplyContext,
    ) -> ApplyResult: ...


def tenant_status(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT status FROM tenant WHERE tenant_id = leo_current_tenant()"
    ).fetchone()
    return None if row is None else str(row[0])
