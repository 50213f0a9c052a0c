"""No input can stop the consumer: whatever bytes arrive, the engine's decode path
(codec, validation, the handler's prepare) either accepts them or raises PoisonMessage with a
known error class and a one-line reason — never any other exception, which would stop the group
on every restart."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_activation import contracts
from leo_activation.codec import SINGLE_OBJECT_MAGIC, SchemaVersion, catalog
from leo_activation.consumers import HANDLERS
from leo_activation.engine.loop import Engine
from leo_activation.errors import PoisonMessage
from leo_activation.settings import Settings
from tests.test_contracts import _strategy

ENGINE = Engine(Settings(), HANDLERS)
KNOWN_CLASSES = {
    "empty", "truncated", "bad_magic", "unknown_schema", "wrong_topic", "invalid_utf8",
    "avro_decode", "trailing_bytes", "bad_uuid", "bad_text", "oversize", "bad_json",
    "bad_embedding", "missing_tenant", "bad_consent", "bad_sealing",
}  # fmt: skip
INPUT_VERSIONS = [v for v in catalog().versions if v.topic in ("commands", "profile-changes",
                                                               "receipts")]  # fmt: skip
DEPTH = contracts.MAX_JSON_DEPTH


def decode(topic: str, value: bytes) -> str | None:
    """The error class the engine's decode gives ``value`` (None: accepted)."""
    msg = Message(topic=topic, partition=0, offset=0, key=None, value=value)
    try:
        ENGINE.decoder.decode(topic, msg)
    except PoisonMessage as poison:
        caught: PoisonMessage | None = poison
    else:
        caught = None
    if caught is None:
        return None
    assert caught.error_class in KNOWN_CLASSES, caught
    assert caught.reason, caught
    assert "\n" not in caught.reason, caught
    return caught.error_class


def frame(version: SchemaVersion, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, version.parsed, record)
    return SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()


def _text_schema(version: SchemaVersion) -> dict[str, Any]:
    """The version with uuid fields as plain strings, so that malformed uuids can be written."""

    def plain(t: Any) -> Any:
        if isinstance(t, dict) and t.get("logicalType") == "uuid":
            return "string"
        if isinstance(t, list):
            return [plain(b) for b in t]
        return t

    return {**version.schema, "fields": [{**f, "type": plain(f["type"])}
                                         for f in version.schema["fields"]]}  # fmt: skip


json_texts: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=40),
    st.integers(DEPTH - 2, 40_000).map(lambda n: "[" * n + "]" * n),
    st.integers(DEPTH - 2, 20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(0, 3).map(lambda n: '{"s":"' + "\\ud83e" * (n + 1) + '"}'),
    st.sampled_from(
        [
            '{"x":1e999}',
            '{"x":NaN}',
            '{"x":-Infinity}',
            '{"x":' + "9" * 5000 + "}",
            '{"a":"[[[["}',
            '{"a":"\\ud83d\\ude00"}',
            "{}",
        ]
    ),
    st.integers(60_000, 70_000).map(lambda n: '{"k":"' + "x" * n + '"}'),
    st.dictionaries(st.text(max_size=5), st.integers()).map(json.dumps),
)
uuid_texts: st.SearchStrategy[str] = st.one_of(
    st.uuids().map(str),
    st.text(max_size=40),
    st.sampled_from(["{12345678-1234-1234-1234-12345678901g}", "urn:uuid:nope", "", "-" * 36,
                     "12345678123412341234123456789012", "{12345678-1234-1234-1234-1234567890ab}"]),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300), version=st.sampled_from(INPUT_VERSIONS), header=st.booleans())
def test_arbitrary_bytes_are_accepted_or_poison(data: bytes, version: SchemaVersion,
                                                header: bool) -> None:  # fmt: skip
    # with the right header the fuzz reaches the Avro body, not only the framing checks
    decode(version.topic, SINGLE_OBJECT_MAGIC + version.fingerprint + data if header else data)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), version=st.sampled_from(INPUT_VERSIONS))
def test_every_schema_with_mutated_fields_is_accepted_or_poison(
    data: st.DataObject, version: SchemaVersion
) -> None:
    schema = _text_schema(version)
    record = data.draw(_strategy(schema))
    for field in schema["fields"]:
        name, avro_type = field["name"], field["type"]
        if name in contracts.JSON_TEXT_FIELDS and avro_type == "string":
            record[name] = data.draw(json_texts)
        elif name.endswith("_id") and _logical_uuid(version, name):
            record[name] = data.draw(uuid_texts)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    value = SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()
    cut = data.draw(st.integers(0, len(value)))
    decode(version.topic, value)
    decode(version.topic, value[:cut])  # and every truncation of it


def _logical_uuid(version: SchemaVersion, name: str) -> bool:
    field = next(f for f in version.schema["fields"] if f["name"] == name)
    types = field["type"] if isinstance(field["type"], list) else [field["type"]]
    return any(isinstance(t, dict) and t.get("logicalType") == "uuid" for t in types)


def _receipt(**fields: Any) -> dict[str, Any]:
    return {"tenant_id": "7d5a2c3e-0b1f-4a57-9a4e-2f6f3a9d1c11",
            "delivery_id": "0b7e7d1c-8f0e-4d2a-9a3e-5e1f2d3c4b5a", "provider": "p",
            "provider_message_id": None, "status": "sent", "occurred_at": 0, "destination": None,
            "channel": None, "provider_response": "{}", "correlation_id": None,
            **fields}  # fmt: skip


def _raw_receipt(**fields: Any) -> bytes:
    version = catalog().latest("delivery_receipt")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(_text_schema(version)),
                               _receipt(**fields))  # fmt: skip
    return SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()


def test_the_poison_pills_found_in_the_field_get_their_class() -> None:
    deep = "[" * 30_000 + "]" * 30_000  # 60 KB, under the text limit
    assert decode("receipts", _raw_receipt(provider_response=deep)) == "bad_json"
    assert decode("receipts", _raw_receipt(provider_response='{"x":"\\ud83e"}')) == "bad_json"
    assert decode("receipts", _raw_receipt(provider_response='{"x":1e999}')) == "bad_json"
    huge = '{"k":"' + "x" * 1_010_000 + '"}'
    assert decode("receipts", _raw_receipt(provider_response=huge)) == "oversize"
    bad = "{12345678-1234-1234-1234-12345678901g}"
    assert decode("receipts", _raw_receipt(delivery_id=bad)) == "bad_uuid"
    assert decode("receipts", _raw_receipt(delivery_id="nope")) == "bad_uuid"
    # nesting up to the limit, and brackets inside strings, are fine
    ok = "[" * (DEPTH - 1) + "]" * (DEPTH - 1)
    assert decode("receipts", _raw_receipt(provider_response='{"a":' + ok + "}")) is None
    assert decode("receipts", _raw_receipt(provider_response='{"a":"' + "[" * 500 + '"}')) is None
    assert decode("receipts", _raw_receipt(provider_response='{"a":"\\ud83d\\ude00"}')) is None


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet='[]{}"\\a,:', max_size=200))
def test_json_depth_bounds_what_json_loads_would_recurse_into(text: str) -> None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return

    def depth(v: Any) -> int:
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if children is None else 1 + max((depth(c) for c in children), default=0)

    assert contracts.json_depth(text) >= depth(parsed)
