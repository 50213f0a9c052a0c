"""The receipts consumer writes a receipt's canonical fact JSON by hand (its hot spot); this checks
that the row id is still exactly ``ids.delivery_fact_id`` over the generic canonical form."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leo_activation import ids
from leo_activation.addresses import without_addresses
from leo_activation.consumers.receipts import receipt_row
from leo_activation.engine.handler import Envelope

# any unicode, including quotes, backslashes and control characters
text: st.SearchStrategy[str] = st.text(max_size=40)
json_values: st.SearchStrategy[object] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def reference_id(tenant: uuid.UUID, r: dict[str, Any]) -> uuid.UUID:
    """The generic derivation: ``ids.delivery_fact_id`` of the fact as the row keeps it, with no
    address (no destination, the response without its address fields)."""
    fact = {
        "fact": "receipt",
        "status": r["status"],
        "provider": r["provider"],
        "provider_message_id": r["provider_message_id"],
        "occurred_at": r["occurred_at"],
        "destination": None,
        "channel": r["channel"],
        "provider_response": without_addresses(json.loads(r["provider_response"])),
    }
    if r["correlation_id"] is not None:  # absent otherwise: older receipts keep their ids
        fact["correlation_id"] = r["correlation_id"]
    return ids.delivery_fact_id(tenant, uuid.UUID(str(r["delivery_id"])), fact)


@st.composite
def receipts(draw: st.DrawFn) -> dict[str, Any]:
    response = draw(st.dictionaries(text, json_values, max_size=4))
    return {
        "tenant_id": draw(st.uuids()),
        "delivery_id": draw(st.uuids()),
        "provider": draw(text),
        "provider_message_id": draw(st.none() | text),
        "status": draw(st.sampled_from(["sent", "delivered", "failed", "bounced", "clicked"])),
        "occurred_at": datetime(2020, 1, 1, tzinfo=UTC)
        + timedelta(microseconds=draw(st.integers(min_value=0, max_value=10**16))),
        "destination": draw(st.none() | text),
        "channel": draw(st.none() | st.sampled_from(["email", "sms", "push", "zalo"])),
        # providers send any JSON text; the row keeps its canonical form
        "provider_response": json.dumps(response, indent=draw(st.none() | st.just(1))),
        "correlation_id": draw(st.none() | text),
    }


@settings(max_examples=300, deadline=None)
@given(record=receipts())
def test_receipt_row_id_is_the_generic_fact_id(record: dict[str, Any]) -> None:
    tenant = record["tenant_id"]
    envelope = Envelope(
        "receipts", 0, 0, None, "delivery_receipt", record, tenant, record["correlation_id"]
    )
    row = receipt_row(envelope, str(tenant))
    assert row[1] == str(reference_id(tenant, record))
    assert (uuid.UUID(row[0]), uuid.UUID(row[2])) == (tenant, record["delivery_id"])
    assert row[4] is None
    assert row[8] == ids.canonical_json(without_addresses(json.loads(record["provider_response"])))
    # the engine hands over validation's parse of provider_response (json.loads): the same row
    parsed = json.loads(record["provider_response"])
    assert receipt_row(envelope, str(tenant), parsed) == row


@settings(max_examples=300, deadline=None)
@given(name=st.text(), namespace=st.uuids())
def test_uuid5_text_is_the_text_of_uuid5(name: str, namespace: uuid.UUID) -> None:
    assert ids.uuid5_text(name, namespace) == str(uuid.uuid5(namespace, name))
