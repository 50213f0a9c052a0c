"""Provider receipts -> append-only ``delivery_log`` rows (one per distinct receipt).

A receipt's row keeps no address: its ``destination`` is not stored and the address fields of
its ``provider_response`` are left out (:mod:`leo_activation.addresses`), and its id is a hash of
what is stored, so an erased profile's address is in no receipt row.

Any order and any number of duplicates give the same rows: a receipt's row id is a hash of its
whole content (its correlation id included), and "current status" is computed by the
``delivery_status_current`` view, never stored by overwriting.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg

from leo_activation import db, ids
from leo_activation.addresses import without_addresses
from leo_activation.bulk import copy_line, stage
from leo_activation.consumers import tenancy
from leo_activation.engine.handler import ApplyResult, Envelope, Gate, Row
from leo_activation.resources import sql_text

COLUMNS = (
    "tenant_id", "log_id", "delivery_id", "channel", "destination", "delivery_status", "provider",
    "provider_message_id", "provider_response", "sent_at", "correlation_id",
    "source_topic", "source_partition", "source_offset",
)  # fmt: skip


# how ids.canonical_json (ensure_ascii=False) writes a string
_quote = json.encoder.encode_basestring


def _json_text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def occurred_text(occurred: datetime | str) -> str:
    """A receipt's ``occurred_at`` as the fact and the row hold it: ISO-8601 text, which COPY
    parses (cheaper than formatting a ``datetime`` for it) and the native path writes too."""
    return occurred.isoformat() if isinstance(occurred, datetime) else str(occurred)


def receipt_fact_id(
    tenant_text: str,
    delivery_text: str,
    r: dict[str, Any],
    response_json: str,
    correlation_id: str | None = None,
    *,
    occurred: str | None = None,
) -> str:
    """``str(ids.delivery_fact_id(tenant, delivery, fact))`` for a receipt's fact, with
    the canonical JSON written directly (the generic encoder is the hot spot of this consumer):
    ``["delivery_log", tenant, delivery, {fact with its keys in sorted order}]``.

    The correlation id is part of the fact: the row keeps it, so it must be part of the row's
    identity, or two reports differing only in it would collapse to whichever arrived first. It
    enters the hash only when present, so receipts without one keep the ids they always had.
    ``occurred``: ``occurred_text(r["occurred_at"])``, when the caller has it."""
    if occurred is None:
        occurred = occurred_text(r["occurred_at"])
    text = "".join(
        (
            '["delivery_log",', _quote(tenant_text), ",", _quote(delivery_text),
            ',{"channel":', _json_text(r["channel"]),
            "" if correlation_id is None else ',"correlation_id":' + _quote(correlation_id),
            ',"destination":null',
            ',"fact":"receipt","occurred_at":', _quote(occurred),
            ',"provider":', _quote(r["provider"]),
            ',"provider_message_id":', _json_text(r["provider_message_id"]),
            ',"provider_response":', response_json,
            ',"status":', _quote(r["status"]),
            "}]",
        )
    )  # fmt: skip
    return ids.uuid5_text(text)


# a tenant's id as text, made once per tenant rather than per receipt
_tenant_text = functools.lru_cache(maxsize=4096)(str)


def receipt_row(e: Envelope, tenant_text: str, response: Any = None) -> tuple[Any, ...]:
    """The delivery_log row of one receipt (``tenant_text``: ``str(e.tenant_id)``, the same for a
    whole batch). Ids and ``occurred_at`` go out as text: COPY parses them, which is cheaper than
    adapting ``uuid.UUID`` and ``datetime`` objects one by one; the native path
    (:mod:`leo_activation.engine.native`) writes the same row."""
    r = e.record
    if response is None:  # validation's parse of provider_response, when the caller has it
        response = json.loads(r["provider_response"])
    response_json = ids.canonical_json(without_addresses(response))
    delivery = r["delivery_id"]
    delivery_text = str(delivery if isinstance(delivery, uuid.UUID) else uuid.UUID(str(delivery)))
    occurred = occurred_text(r["occurred_at"])
    return (
        tenant_text,
        receipt_fact_id(tenant_text, delivery_text, r, response_json, e.correlation_id,
                        occurred=occurred),
        delivery_text, r["channel"], None, r["status"], r["provider"],
        r["provider_message_id"], response_json, occurred, e.correlation_id,
        e.topic, e.partition, e.offset,
    )  # fmt: skip


class ReceiptsHandler:
    topic = "receipts"
    gate: Gate | None = tenancy.TENANCY

    def prepare(self, envelope: Envelope, json_fields: Mapping[str, Any]) -> Row:
        response = json_fields.get("provider_response")
        return Row(copy_line(receipt_row(envelope, _tenant_text(envelope.tenant_id), response)))

    def apply(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        batch: list[Envelope],
    ) -> ApplyResult:
        tenant_text = str(tenant_id)
        lines = (e.row or copy_line(receipt_row(e, tenant_text)) for e in batch)
        stage(conn, "delivery_log", COLUMNS, lines)
        inserted = db.written(conn.execute(sql_text("queries/receipts/insert.sql")))
        return ApplyResult(applied=inserted, duplicates=len(batch) - inserted)
