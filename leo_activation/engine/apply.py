"""Step 3 of a batch: one database transaction per tenant, as the application role with the
tenant set for the transaction only, in which each topic's handler applies its messages
set-based. A transient database fault is retried with backoff (never dead-lettered); a database
that cannot do what the product needs (``db.Fault.INCAPABLE``: a privilege, a table or a feature
missing, credentials refused) stops the consumer with nothing committed; a data error is narrowed
down, by halving the tenant's batch, to the message that caused it, which is rejected alone.
Nothing here touches Kafka."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

from leo_activation import db
from leo_activation.engine.handler import (
    AfterCommit,
    ApplyResult,
    Connection,
    Envelope,
    FollowUp,
    Handler,
)
from leo_activation.engine.stats import Counts
from leo_activation.errors import LeoError, PoisonMessage, first_line
from leo_activation.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Applied(ApplyResult):
    """An ApplyResult with each topic's share of applied and duplicates."""

    by_topic: defaultdict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))

    def add(self, topic: str, part: ApplyResult) -> None:
        self.merge(part)
        counts = self.by_topic[topic]
        counts.applied += part.applied
        counts.duplicates += part.duplicates

    def merge(self, other: ApplyResult) -> None:
        super().merge(other)
        if isinstance(other, Applied):
            for topic, counts in other.by_topic.items():
                self.by_topic[topic].add(counts)


class TenantApplier:
    """Applies decoded envelopes through ``handlers`` (in their order within a tenant's
    transaction), on a connection of its own, retrying while the database is unavailable."""

    def __init__(
        self,
        settings: Settings,
        handlers: Sequence[Handler],
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.handlers = list(handlers)
        self.on_retry = on_retry
        self.stopping = False
        # a connection per thread: the calling thread's, and each of the pool's
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        # a consumer opens this many connections, and one more for what runs after them
        self._pool = ThreadPoolExecutor(settings.tenants_at_once, thread_name_prefix="leo-tenant")

    def apply(
        self,
        by_tenant: Mapping[uuid.UUID, list[Envelope]],
        horizons: Mapping[str, int | None] | None = None,
    ) -> Applied:
        """Apply, one transaction per tenant (``tenants_at_once`` of them side by side), then the
        follow-ups they asked for (each in its own transaction). ``horizons``: per upstream topic,
        the publish time of its earliest unread message (see ``Gate``)."""
        result = Applied()
        # tenants are independent (no row of one is read or written for another): their
        # transactions run side by side, each on its own connection, merged in tenant-id order;
        # all are waited for before any failure is raised, so none is left running
        parts = [
            self._pool.submit(
                self._apply_bisecting, tenant_id, by_tenant[tenant_id], horizons or {}
            )
            for tenant_id in sorted(by_tenant)
        ]
        wait(parts)
        for part in parts:
            result.merge(part.result())
        for action in result.of(FollowUp):
            self.with_retry(_in_transaction(action))
        return result

    def after_commit(self, result: ApplyResult) -> None:
        """The database work of a batch whose Kafka transaction committed."""
        for action in result.of(AfterCommit):
            self.with_retry(_in_transaction(action))

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections = []
        self._local = threading.local()

    def _apply_bisecting(
        self, tenant_id: uuid.UUID, batch: list[Envelope], horizons: Mapping[str, int | None]
    ) -> Applied:
        try:
            return self.with_retry(
                lambda conn: self._apply_tenant(conn, tenant_id, batch, horizons)
            )
        except psycopg.Error as exc:
            # not transient (with_retry retried those) nor incapable (it raised those)
            if len(batch) == 1:
                rejected = Applied()
                rejected.rejected.append((batch[0], PoisonMessage("db_rejected", first_line(exc))))
                return rejected
            # a data error poisons only its own message: split until it is isolated
            half = len(batch) // 2
            left = self._apply_bisecting(tenant_id, batch[:half], horizons)
            left.merge(self._apply_bisecting(tenant_id, batch[half:], horizons))
            return left

    def _apply_tenant(
        self,
        conn: Connection,
        tenant_id: uuid.UUID,
        batch: list[Envelope],
        horizons: Mapping[str, int | None],
    ) -> Applied:
        result = Applied()
        by_topic: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in batch:
            by_topic[envelope.topic].append(envelope)
        with db.tenant_transaction(conn, tenant_id):
            for handler in self.handlers:
                envelopes = by_topic.get(handler.topic)
                if not envelopes:
                    continue
                if handler.gate is not None:
                    horizon = horizons.get(handler.gate.upstream)
                    envelopes, waiting, rejected = handler.gate.judge(conn, envelopes, horizon)
                    result.waiting += waiting
                    result.rejected += rejected
                    if not envelopes:
                        continue
                result.add(handler.topic, handler.apply(conn, tenant_id, envelopes))
        return result

    def connection(self) -> Connection:
        """The calling thread's connection."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = db.connect(self.settings.require_database())
            self._connections = [c for c in self._connections if not c.closed] + [conn]
        return conn

    def check(self) -> None:
        """Connect once, at start: refused credentials, a missing database or a Citus database
        that would not pass the tenant context on to its workers stop the consumer before it
        reads anything; an unreachable server is waited for."""
        self.with_retry(db.check_tenant_context)
        self.close()  # opened again with the first batch

    def with_retry(self, work: Callable[[Connection], T]) -> T:
        """``work`` on the connection, retried with backoff while the fault is transient; a
        database that cannot do what the product needs raises ``LeoError``."""
        try:
            return self._retrying(work)
        except psycopg.Error as exc:
            if db.classify(exc) is db.Fault.INCAPABLE:
                raise incapable(exc) from None
            raise

    def _retrying(self, work: Callable[[Connection], T]) -> T:

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "database unavailable (%s); attempt %d failed, next in %.1fs",
                first_line(exc) if exc else "-", state.attempt_number, delay,
            )  # fmt: skip
            if self.on_retry is not None:
                self.on_retry("db")
            conn = getattr(self._local, "conn", None)
            if conn is not None and (conn.closed or conn.broken):
                self._local.conn = None

        for attempt in Retrying(
            retry=retry_if_exception(db.is_transient),
            wait=wait_exponential_jitter(multiplier=0.2, max=10),
            stop=stop_never,
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                if self.stopping and attempt.retry_state.attempt_number > 1:
                    raise LeoError("stopping while the database is unavailable; nothing committed")
                return work(self.connection())
        raise AssertionError("unreachable")


def incapable(exc: psycopg.Error) -> LeoError:
    """The one-line error that stops the consumer on a ``db.Fault.INCAPABLE`` error."""
    state = exc.sqlstate or "at connect"
    return LeoError(
        f"the database cannot do what the product needs ({state}): {first_line(exc)}; "
        "consumer stopped, nothing committed"
    )


def _in_transaction(action: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        with conn.transaction():
            action(conn)

    return run
