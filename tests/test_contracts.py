"""The Avro contracts: every schema round-trips, older versions stay readable, bad bytes are
named precisely, and the JSON Lines shape is validated before anything is sent."""

from __future__ import annotations

import io
import json
import math
import re
import socket
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leo_activation.codec import (
    SINGLE_OBJECT_MAGIC,
    RegistryCodec,
    SchemaVersion,
    SingleObjectCodec,
    catalog,
)
from leo_activation.contracts import from_json, validate
from leo_activation.errors import LeoError, PoisonMessage

CODEC = SingleObjectCodec()
TENANT = "7d5a2c3e-0b1f-4a57-9a4e-2f6f3a9d1c11"


def _strategy(avro_type: Any) -> st.SearchStrategy[Any]:  # noqa: PLR0911 (one per Avro type)
    """Values of an Avro type, in the Python form fastavro writes and reads back."""
    if isinstance(avro_type, list):
        return st.one_of(*[_strategy(t) for t in avro_type])
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "uuid":
            return st.uuids()
        if logical == "timestamp-micros":
            return st.datetimes(
                min_value=datetime(1971, 1, 1),
                max_value=datetime(2200, 1, 1),
                timezones=st.just(UTC),
            )
        kind = avro_type["type"]
        if kind == "record":
            return st.fixed_dictionaries(
                {f["name"]: _strategy(f["type"]) for f in avro_type["fields"]}
            )
        if kind == "enum":
            return st.sampled_from(avro_type["symbols"])
        if kind == "array":
            return st.lists(_strategy(avro_type["items"]), max_size=4)
        return _strategy(kind)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": st.text(max_size=20),
        "bytes": st.binary(max_size=20),
    }[avro_type]


@pytest.mark.parametrize("version", catalog().versions, ids=lambda v: f"{v.name}.v{v.version}")
def test_every_schema_round_trips(version: SchemaVersion) -> None:
    @settings(max_examples=25, deadline=None)
    @given(record=_strategy(version.schema))
    def round_trip(record: dict[str, Any]) -> None:
        latest = catalog().latest(version.kind)
        if latest.version != version.version:
            return  # older versions are checked by test_older_versions_stay_readable
        kind, decoded = CODEC.decode(version.topic, CODEC.encode(version.kind, record))
        assert kind == version.kind
        assert _normalise(decoded) == _normalise(record)

    round_trip()


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _frame(version: SchemaVersion, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, version.parsed, record)
    return SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()


def test_older_versions_stay_readable() -> None:
    v1 = next(v for v in catalog().versions if v.name == "ProfileUpsert" and v.version == 1)
    record = {
        "tenant_id": TENANT, "profile_id": str(uuid.uuid4()), "version": 3,
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC), "ext_id": "crm-1", "email": "a@b.c",
        "mobile_number": None, "raw_attributes": "{}", "correlation_id": None,
    }  # fmt: skip
    kind, decoded = CODEC.decode("profile-changes", _frame(v1, record))
    assert kind == "profile_upsert"
    assert decoded["data_labels"] == []  # filled from the newer version's default
    assert decoded["push_token"] is None
    assert decoded["email"] == "a@b.c"


def _receipt() -> dict[str, Any]:
    return {
        "type": "delivery_receipt", "tenant_id": TENANT, "delivery_id": str(uuid.uuid4()),
        "provider": "sendgrid", "status": "delivered", "occurred_at": "2026-03-01T10:00:00Z",
        "provider_response": {"code": 250},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "error_class"),
    [
        (b"", "empty"),
        (b"\xc3\x01\x00", "truncated"),
        (b"\x00" * 16, "bad_magic"),
        (SINGLE_OBJECT_MAGIC + b"\xff" * 8 + b"\x00", "unknown_schema"),
    ],
)
def test_bad_bytes_are_named(data: bytes, error_class: str) -> None:
    with pytest.raises(PoisonMessage) as caught:
        CODEC.decode("receipts", data)
    assert caught.value.error_class == error_class


def test_a_message_on_the_wrong_topic_is_poison() -> None:
    kind, record = from_json("receipts", _receipt())
    with pytest.raises(PoisonMessage) as caught:
        CODEC.decode("commands", CODEC.encode(kind, record))
    assert caught.value.error_class == "wrong_topic"


def test_invalid_utf8_and_bad_uuid_inside_the_body() -> None:
    receipt = catalog().latest("delivery_receipt")
    kind, record = from_json("receipts", _receipt())
    good = CODEC.encode(kind, record)
    marker = b"sendgrid"
    with pytest.raises(PoisonMessage) as caught:
        CODEC.decode("receipts", good.replace(marker, b"send\xff\xfeid"))
    assert caught.value.error_class == "invalid_utf8"
    as_text = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in record.items()}
    bad_uuid = dict(as_text, delivery_id="not-a-uuid-at-all-but-36-characters!")
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(_without_logical(receipt.schema)), bad_uuid
    )
    framed = SINGLE_OBJECT_MAGIC + receipt.fingerprint + body.getvalue()
    with pytest.raises(PoisonMessage) as caught:
        CODEC.decode("receipts", framed)
    assert caught.value.error_class == "bad_uuid"


def _without_logical(schema: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(schema).replace('"logicalType": "uuid"', '"logicalType": "none"')
    return dict(json.loads(text), name="ReceiptNoLogical")


def test_truncated_body_is_poison() -> None:
    kind, record = from_json("receipts", _receipt())
    with pytest.raises(PoisonMessage) as caught:
        CODEC.decode("receipts", CODEC.encode(kind, record)[:-5])
    assert caught.value.error_class in {"truncated", "avro_decode"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tenant_id": "nope"}, "tenant_id='nope' is not a uuid"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "has no time zone"),
        ({"provider": "x" * 101}, "provider is 101 chars"),
        ({"status": "teleported"}, "does not match its Avro schema"),
        ({"surprise": 1}, "unknown field(s) for delivery_receipt: surprise"),
        ({"type": "tenant_register"}, "does not belong on this topic"),
        ({"provider_response": "[1, 2]"}, "provider_response must be a JSON object"),
    ],
)
def test_json_lines_shape_is_validated(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        from_json("receipts", {**_receipt(), **change})


def test_embedding_must_have_384_finite_values() -> None:
    event = {
        "type": "event_define", "tenant_id": TENANT, "campaign_code": "c", "event_key": "e",
        "event_name": "E", "event_type": "email", "event_channel": "email",
        "occurred_at": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    assert from_json("commands", {**event, "embedding": [0.5] * 384})[0] == "event_define"
    with pytest.raises(ValueError, match="3 dimensions"):
        from_json("commands", {**event, "embedding": [0.5] * 3})
    _, record = from_json("commands", event)
    with pytest.raises(PoisonMessage, match="NaN"):
        validate("event_define", {**record, "embedding": [math.nan] * 384})


def test_registry_wire_format_round_trips_and_unknown_ids_are_poison() -> None:
    codec = RegistryCodec(f"mock://{uuid.uuid4().hex}")
    kind, record = from_json("receipts", _receipt())
    data = codec.encode(kind, record)
    assert data[0] == 0
    assert codec.decode("receipts", data)[1]["provider"] == "sendgrid"
    with pytest.raises(PoisonMessage) as caught:
        codec.decode("receipts", b"\x00" + struct.pack(">I", 999_999) + data[5:])
    assert caught.value.error_class == "unknown_schema"


def test_an_unreachable_registry_stops_decoding_instead_of_dead_lettering() -> None:
    """A registry that does not answer says nothing about the message: decoding gives up with a
    LeoError (the consumer stops, its offsets uncommitted) rather than a PoisonMessage."""
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    codec = RegistryCodec(f"http://127.0.0.1:{port}", retry_s=0.5)
    kind, record = from_json("receipts", _receipt())
    body = RegistryCodec(f"mock://{uuid.uuid4().hex}").encode(kind, record)
    with pytest.raises(LeoError, match="schema registry unavailable") as caught:
        codec.decode("receipts", body)
    assert not isinstance(caught.value, PoisonMessage)


def test_timestamps_keep_microseconds() -> None:
    moment = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    kind, record = from_json("receipts", {**_receipt(), "occurred_at": moment.isoformat()})
    decoded = CODEC.decode("receipts", CODEC.encode(kind, record))[1]
    assert decoded["occurred_at"] == moment
    assert decoded["occurred_at"] - moment == timedelta(0)


def _upsert_with(consents: Any) -> dict[str, Any]:
    return {"type": "profile_upsert", "tenant_id": str(uuid.uuid4()),
            "profile_id": str(uuid.uuid4()), "version": 1,
            "occurred_at": "2026-03-01T10:00:00Z", "consents": consents}  # fmt: skip


def test_consent_facts_take_iso_times_and_refuse_unknown_fields() -> None:
    fact = {"channel": "email", "state": "granted", "legal_basis": "consent", "source": "web",
            "occurred_at": "2026-02-01T09:30:00+07:00"}  # fmt: skip
    _, record = from_json("profile-changes", _upsert_with([fact]))
    assert record["consents"][0]["occurred_at"] == datetime(2026, 2, 1, 2, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match=re.escape("unknown field(s) in consents: why")):
        from_json("profile-changes", _upsert_with([{**fact, "why": "x"}]))
    with pytest.raises(ValueError, match="has no time zone"):
        from_json("profile-changes", _upsert_with([{**fact, "occurred_at": "2026-02-01T09:30"}]))
    with pytest.raises(ValueError, match="does not match its Avro schema"):
        from_json("profile-changes", _upsert_with(["email"]))
