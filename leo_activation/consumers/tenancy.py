"""Whether a tenant-scoped message is applied, waits, or is dead-lettered, decided by a rule that
does not depend on how far the commands topic has been read.

A message is judged by its tenant's status in effect when it was published (its Kafka timestamp,
which is part of the topic's content and the same on every replay): the last status change
(``tenant_lifecycle``) whose command was published at or before it. Not registered then:
``unknown_tenant``; disabled then: ``disabled_tenant``. That is only final once every command
published at or before the message has been applied, so while the commands topic still holds
an unread one (``horizon_ms``: the earliest unread command's timestamp) the message waits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from leo_activation.engine.handler import Envelope, Rejected
from leo_activation.errors import PoisonMessage
from leo_activation.resources import sql_text

History = list[tuple[int | None, str]]  # (published ms, None: since ever; status), applied order


def history(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> History:
    rows = conn.execute(sql_text("queries/tenancy/lifecycle.sql"), {"tenant_id": tenant_id})
    return [(None if ts is None else int(ts), str(status)) for ts, status in rows]


def status_at(changes: History, published_ms: int) -> str | None:
    status = None
    for ts, changed in changes:
        if ts is None or ts <= published_ms:
            status = changed
    return status


def record(
    conn: psycopg.Connection[Any], e: Envelope, status: str, previous: str | None = None
) -> None:
    """Append a status change the command ``e`` made (``previous``: the status it replaced)."""
    params = {
        "tenant_id": e.tenant_id,
        "status": status,
        "previous": previous,
        "occurred_at": e.record["occurred_at"],
        "published_ms": e.published_ms,
    }
    if previous is not None:
        conn.execute(sql_text("queries/tenancy/lifecycle_seed.sql"), params)
    conn.execute(sql_text("queries/tenancy/lifecycle_append.sql"), params)


def current_status(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> str | None:
    """The tenant's status now (None: not registered)."""
    row = conn.execute(sql_text("queries/tenancy/status.sql"), {"tenant_id": tenant_id}).fetchone()
    return None if row is None else str(row[0])


def refusal(e: Envelope, changes: History) -> PoisonMessage | None:
    """Why ``e`` may not be applied, judged by its tenant's status when it was published; None
    if the tenant was active then."""
    status = status_at(changes, e.published_ms)
    if status == "active":
        return None
    if status is None:
        return PoisonMessage(
            "unknown_tenant", f"tenant {e.tenant_id} was not registered when this was published"
        )
    return PoisonMessage(
        "disabled_tenant", f"tenant {e.tenant_id} was {status} when this was published"
    )


class TenancyGate:
    """Holds tenant-scoped messages back while a command published at or before them is
    unread, then admits those whose tenant was active when they were published."""

    upstream = "commands"

    def judge(
        self, conn: psycopg.Connection[Any], envelopes: Sequence[Envelope], horizon_ms: int | None
    ) -> tuple[list[Envelope], list[Envelope], list[Rejected]]:
        admitted: list[Envelope] = []
        waiting: list[Envelope] = []
        rejected: list[Rejected] = []
        if not envelopes:
            return admitted, waiting, rejected
        changes = history(conn, envelopes[0].tenant_id)
        # the common case, judged once for all: nothing unread before the last of them, and
        # the tenant active from the first to the last (no status change in between)
        first = min(e.published_ms for e in envelopes)
        last = max(e.published_ms for e in envelopes)
        if (
            (horizon_ms is None or horizon_ms > last)
            and status_at(changes, first) == "active"
            and not any(ts is not None and first < ts <= last for ts, _ in changes)
        ):
            return list(envelopes), waiting, rejected
        for e in envelopes:
            if horizon_ms is not None and horizon_ms <= e.published_ms:
                waiting.append(e)
            elif (refused := refusal(e, changes)) is not None:
                rejected.append((e, refused))
            else:
                admitted.append(e)
        return admitted, waiting, rejected


TENANCY = TenancyGate()
