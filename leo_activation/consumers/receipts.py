"""Provider receipts -> append-only ``delivery_log`` rows (one per distinct receipt).

Any order and any number of duplicates give the same rows: a receipt's row id is a hash of its
whole content, and "current status" is computed by the ``delivery_status_current`` view, never
stored by overwriting.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from leo_activation import ids
from leo_activation.bulk import stage
from leo_activation.handling import ApplyContext, ApplyResult, Envelope
from leo_activation.resources import sql_text

COLUMNS = (
    "tenant_id", "log_id", "delivery_id", "channel", "destination", "delivery_status", "provider",
    "provider_message_id", "provider_response", "sent_at", "correlation_id",
    "source_topic", "source_partition", "source_offset",
)  # fmt: skip


def receipt_row(e: Envelope) -> tuple[Any, ...]:
    r = e.record
    response = json.loads(r["provider_response"])
    fact = {
        "fact": "receipt",
        "status": r["status"],
        "provider": r["provider"],
        "provider_message_id": r["provider_message_id"],
        "occurred_at": r["occurred_at"],
        "destination": r["destination"],
        "channel": r["channel"],
        "provider_response": response,
    }
    delivery = uuid.UUID(str(r["delivery_id"]))
    return (
        e.tenant_id, ids.delivery_fact_id(e.tenant_id, delivery, fact), delivery, r["channel"],
        r["destination"], r["status"], r["provider"], r["provider_message_id"],
        ids.canonical_json(response), r["occurred_at"], e.correlation_id,
        e.topic, e.partition, e.offset,
    )  # fmt: skip


class ReceiptsHandler:
    topic = "receipts"
    requires_active_tenant = True

    def apply(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
        ctx: ApplyContext,
    ) -> ApplyResult:
        stage(conn, "delivery_log", COLUMNS, (receipt_row(e) for e in batch))
        inserted = conn.execute(sql_text("queries/receipts_insert.sql")).rowcount
        return ApplyResult(applied=inserted, duplicates=len(batch) - inserted)
