"""What a valid message is, beyond its Avro type: the JSON Lines shape users publish, and the
checks every consumer applies to a decoded record before touching the database.

JSON shape of a message: the Avro record's fields as a JSON object, plus ``"type"`` naming the
message type in snake_case (optional on topics that carry one type). Timestamps are ISO-8601 with
a zone; uuids are canonical strings; JSON-valued fields (``raw_attributes``, ``reasoning_trace``,
``provider_response``) may be given as JSON objects.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any

import fastavro.validation

from leo_activation.codec import Catalog, SchemaVersion, catalog
from leo_activation.errors import PoisonMessage
from leo_activation.sealing import SIV_TAG_BYTES

EMBEDDING_DIM = 384  # must match marketing_event.embedding vector(384) in sql/
JSON_TEXT_FIELDS = frozenset({"raw_attributes", "reasoning_trace", "provider_response"})
MAX_JSON_TEXT = 64 * 1024
# far below Python's recursion limit: json.loads and every later json.dumps of the value recurse
MAX_JSON_DEPTH = 64
MAX_TEXT = {
    "reasoning_summary": 10_000,
    "objective": 2_000,
    "snapshot_reason": 2_000,
    "reason": 2_000,
    "campaign_name": 500,
    "event_name": 500,
    "email": 320,
    "destination": 320,
    "mobile_number": 32,
    "push_token": 512,
    "provider": 100,
}
DEFAULT_MAX_TEXT = 200  # keys, codes, names, ids


def _field_types(version: SchemaVersion) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in version.schema["fields"]}


def _logical(avro_type: Any) -> str | None:
    """The logical type of a field, looking through ``["null", T]`` unions."""
    if isinstance(avro_type, list):
        for branch in avro_type:
            if branch != "null":
                return _logical(branch)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        return str(logical) if logical else None
    return None


@dataclass(frozen=True, slots=True)
class _Check:
    """What validate checks of one field, worked out once per schema version (validate runs for
    every message consumed)."""

    name: str
    is_uuid: bool
    is_json: bool  # JSON text: must parse to an object
    max_len: int  # for a text value
    is_embedding: bool
    is_labels: bool


_CHECKS: dict[bytes, tuple[_Check, ...]] = {}
_SEALED = "_sealed"


def _max_len(name: str) -> int:
    """A text field's limit in characters; a sealed field's (bytes) is its plaintext's limit in
    UTF-8 bytes at most 4 a character, plus the SIV tag."""
    if name.endswith(_SEALED):
        return 4 * _max_len(name.removesuffix(_SEALED)) + SIV_TAG_BYTES
    return MAX_JSON_TEXT if name in JSON_TEXT_FIELDS else MAX_TEXT.get(name, DEFAULT_MAX_TEXT)


def _checks(version: SchemaVersion) -> tuple[_Check, ...]:
    checks = _CHECKS.get(version.fingerprint)
    if checks is None:
        checks = tuple(
            _Check(
                name=name,
                is_uuid=_logical(t) == "uuid",
                is_json=name in JSON_TEXT_FIELDS,
                max_len=_max_len(name),
                is_embedding=name == "embedding",
                is_labels=name == "data_labels",
            )
            for name, t in _field_types(version).items()
        )
        _CHECKS[version.fingerprint] = checks
    return checks


def validate(kind: str, record: Mapping[str, Any], cat: Catalog | None = None) -> dict[str, Any]:
    """Raise :class:`PoisonMessage` if a decoded record breaks a rule its Avro type cannot state.
    Returns the JSON text fields it parsed (name -> object), so that no consumer parses them
    twice."""
    checks = _checks((cat or catalog()).latest(kind))
    parsed: dict[str, Any] = {}
    for check in checks:
        value = record.get(check.name)
        if value is None:
            continue
        if check.is_uuid and not isinstance(value, uuid.UUID):
            try:
                uuid.UUID(str(value))
            except ValueError:
                raise PoisonMessage(
                    "bad_uuid", f"{check.name}={str(value)[:60]!r} is not a uuid"
                ) from None
        if isinstance(value, str):
            _check_text(check, value)
            if check.is_json:
                parsed[check.name] = _parse_json_object(check.name, value)
        elif isinstance(value, bytes):
            if len(value) > check.max_len:
                raise PoisonMessage(
                    "oversize", f"{check.name} is {len(value)} bytes (max {check.max_len})"
                )
        elif check.is_embedding:
            _check_embedding(value)
        elif check.is_labels and any(len(str(label)) > DEFAULT_MAX_TEXT for label in value):
            raise PoisonMessage("oversize", f"a data label is longer than {DEFAULT_MAX_TEXT}")
    if record.get("tenant_id") is None and any(c.name == "tenant_id" for c in checks):
        raise PoisonMessage("missing_tenant", "tenant_id is missing")
    return parsed


def _check_text(check: _Check, value: str) -> None:
    name = check.name
    if "\x00" in value:
        raise PoisonMessage("bad_text", f"{name} contains a NUL character")
    if len(value) > check.max_len:
        raise PoisonMessage("oversize", f"{name} is {len(value)} chars (max {check.max_len})")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply ``text`` nests arrays/objects, found without recursion (so before parsing it).
    Brackets inside strings do not count; an unterminated string only makes it an overestimate."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # the common case, at C speed
        return text.count("[") + text.count("{")
    brackets = _BRACKET.findall(_JSON_STRING.sub("", text))
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: json.loads makes it inf, which canonical JSON refuses
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json_object(name: str, value: str) -> dict[str, Any]:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise PoisonMessage("bad_json", f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        parsed = json.loads(value, parse_float=_finite, parse_constant=_no_constant)
    except ValueError as exc:
        raise PoisonMessage("bad_json", f"{name} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise PoisonMessage("bad_json", f"{name} must be a JSON object")
    if "\\u" in value:  # an escape may encode a lone surrogate, which no UTF-8 text can hold
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise PoisonMessage("bad_json", f"{name} contains a lone surrogate escape") from None
    return parsed


def _check_embedding(value: Any) -> None:
    if len(value) != EMBEDDING_DIM:
        raise PoisonMessage(
            "bad_embedding", f"embedding has {len(value)} dimensions, expected {EMBEDDING_DIM}"
        )
    if not all(math.isfinite(x) for x in value):
        raise PoisonMessage("bad_embedding", "embedding has a NaN or infinite value")


def _from_json_value(name: str, avro_type: Any, value: Any) -> Any:
    """Convert one JSON value to what the Avro writer takes for that field."""
    if value is None:
        return None
    items = avro_type.get("items") if isinstance(avro_type, dict) else None
    if isinstance(items, dict) and items.get("type") == "record" and isinstance(value, list):
        return [_from_json_item(name, items, item) for item in value]
    logical = _logical(avro_type)
    if logical in ("timestamp-micros", "timestamp-millis"):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be an ISO-8601 string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{name}={value!r} has no time zone (add Z or +00:00)")
        return parsed
    if logical == "uuid":
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a uuid") from None
    if name in JSON_TEXT_FIELDS and isinstance(value, dict):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} contains a lone surrogate (a cut character?)") from None
    return value


def _from_json_item(name: str, record_type: Mapping[str, Any], item: Any) -> Any:
    """One record of an array field (e.g. a consent fact), converted field by field."""
    if not isinstance(item, dict):
        return item  # the Avro check names the wrong type
    fields = {f["name"]: f["type"] for f in record_type["fields"]}
    unknown = sorted(set(item) - set(fields))
    if unknown:
        raise ValueError(f"unknown field(s) in {name}: {', '.join(unknown)}")
    return {n: _from_json_value(f"{name}.{n}", t, item.get(n)) for n, t in fields.items()}


def from_json(topic: str, obj: Any, cat: Catalog | None = None) -> tuple[str, dict[str, Any]]:
    """A JSON Lines object -> (kind, Avro record), or ValueError saying what is wrong."""
    cat = cat or catalog()
    if not isinstance(obj, dict):
        raise ValueError("a message must be a JSON object")
    kinds = cat.kinds(topic)
    kind = obj.get("type")
    if kind is None:
        if len(kinds) != 1:
            raise ValueError(f"'type' is required on this topic: one of {', '.join(kinds)}")
        kind = kinds[0]
    if kind not in kinds:
        raise ValueError(f"type {kind!r} does not belong on this topic: one of {', '.join(kinds)}")
    fields = _field_types(cat.latest(kind))
    unknown = sorted(set(obj) - set(fields) - {"type"})
    if unknown:
        raise ValueError(f"unknown field(s) for {kind}: {', '.join(unknown)}")
    record = {name: _from_json_value(name, t, obj.get(name)) for name, t in fields.items()}
    for name, t in fields.items():
        if name not in obj:
            default = next(f for f in cat.latest(kind).schema["fields"] if f["name"] == name)
            if "default" in default:
                record[name] = default["default"]
            elif t != "null" and not (isinstance(t, list) and "null" in t):
                raise ValueError(f"{kind}: required field {name!r} is missing")
    # Avro types first: the rules below assume a value has its field's type
    try:
        fastavro.validation.validate(record, cat.latest(kind).parsed, raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        raise ValueError(f"{kind}: does not match its Avro schema: {_type_error(exc)}") from None
    try:
        validate(kind, record, cat)
    except PoisonMessage as exc:
        raise ValueError(exc.reason) from None
    return kind, record


def _type_error(exc: fastavro.validation.ValidationError) -> str:
    """One line for fastavro's multi-line dump: the first field with a wrong type."""
    errors: list[Any] = list(exc.errors or [])
    if not errors:
        return "no detail"
    first = errors[0]
    field = str(first.field).rsplit(".", 1)[-1]
    shown = repr(first.datum)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{field} is {shown} ({type(first.datum).__name__}), not {_type_name(first.schema)}"


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_type_name(branch) for branch in schema)
    if isinstance(schema, dict):
        return str(schema.get("logicalType") or schema.get("name") or schema.get("type"))
    return str(schema).rsplit(".", 1)[-1]
