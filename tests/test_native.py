"""One behaviour, two implementations: the native decoder (the ``leo_native`` extension) and the
Python path give every message the same outcome — the same envelope and row (ids included), or
the same dead letter (error class and reason) — for every shipped schema version of the input
topics, valid and poison inputs alike; and a corpus consumed either way leaves the same digest."""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import fastavro
import psycopg
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_activation import contracts
from leo_activation.addresses import ADDRESS_KEYS, is_address_key
from leo_activation.bulk import copy_line, extended
from leo_activation.codec import SINGLE_OBJECT_MAGIC, SchemaVersion, SingleObjectCodec
from leo_activation.consumers import HANDLERS
from leo_activation.contracts import from_json
from leo_activation.dev import corpus
from leo_activation.dev.stack import Endpoints
from leo_activation.engine import native
from leo_activation.engine.decode import CORRELATION_HEADER, Decoder, Polled
from leo_activation.engine.loop import Engine
from leo_activation.ops.digest import state_digest
from leo_activation.producers.profile_keys import KeyRing
from leo_activation.sealing import SEALED_FIELDS
from leo_activation.settings import Settings
from tests.fix_app import deployment_settings, publish_corpus
from tests.fix_db import DbUrls, fresh_database
from tests.test_contracts import _strategy
from tests.test_poison_fuzz import INPUT_VERSIONS, _logical_uuid, _text_schema, json_texts
from tests.test_poison_fuzz import uuid_texts as poison_uuid_texts
from tests.test_receipt_rows import json_values
from tests.test_receipt_rows import receipts as receipt_records

# a machine without the Rust toolchain runs the Python path alone; one with it must have built it
pytestmark = pytest.mark.skipif(
    shutil.which("cargo") is None and not native.available(),
    reason="no Rust toolchain here: the Python path runs alone",
)

TOPICS = {v.topic: v.topic for v in INPUT_VERSIONS}
PYTHON = Decoder(SingleObjectCodec(), HANDLERS, TOPICS, "test", native=False)
NATIVE = Decoder(SingleObjectCodec(), HANDLERS, TOPICS, "test")
NATIVE_VERSIONS = [v for v in INPUT_VERSIONS if v.topic in ("receipts", "profile-changes")]

valid_json_objects: st.SearchStrategy[str] = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(json.dumps),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(
        lambda d: json.dumps(d, indent=1, ensure_ascii=False)
    ),
    st.sampled_from(['{"a":"\\ud83d\\ude00"}', '{"a":-0,"a":1.50E+3}', ' {"b":[],"a":{}} ']),
)
json_objects = st.one_of(json_texts, valid_json_objects)
uuid_texts: st.SearchStrategy[str] = st.one_of(
    poison_uuid_texts, st.uuids().map(lambda u: str(u).upper())
)


def outcome(polled: Polled) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the engine goes on with: every envelope but its ``record`` (the native path keeps
    only the row), and every dead letter, in offset order."""
    envelopes = sorted(
        (e.offset, e.topic, e.partition, e.key, e.kind, e.tenant_id, e.correlation_id, e.row,
         e.published_ms, e.row_key)
        for batch in polled.by_tenant.values() for e in batch
    )  # fmt: skip
    dead = sorted(
        (d.source[2], d.logical_topic, d.error_class, d.reason, d.tenant_id, d.correlation_id)
        for d in polled.dead
    )  # fmt: skip
    return envelopes, dead


def message(topic: str, offset: int, value: bytes | None, correlation: bytes | None) -> Message:
    headers: list[tuple[str, str | bytes | None]] | None = (
        None if correlation is None else [(CORRELATION_HEADER, correlation)]
    )
    return Message(topic=topic, partition=offset % 3, offset=offset, key=b"k", value=value,
                   headers=headers, timestamp=(TIMESTAMP_CREATE_TIME, 1_000 + offset))  # fmt: skip


def assert_same(messages: list[Message]) -> Polled:
    expected = PYTHON.decode_batch(messages)
    got = NATIVE.decode_batch(messages)
    assert outcome(got) == outcome(expected)
    return got


def encoded(version: SchemaVersion, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return SINGLE_OBJECT_MAGIC + version.fingerprint + body.getvalue()


def test_the_extension_is_built_and_prepares_receipts_and_profile_changes() -> None:
    assert NATIVE.native is not None, "scripts/bootstrap.sh builds the extension"
    assert {"delivery_receipt", "profile_upsert", "segment_membership_change"} <= set(
        NATIVE.native.kinds()
    )


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.data(),
    # the versions the native path prepares, more often than the ones it leaves to Python
    version=st.sampled_from(NATIVE_VERSIONS) | st.sampled_from(INPUT_VERSIONS),
    poison=st.booleans(),
    correlation=st.none() | st.sampled_from([b"", b"from-header", b"\xff\xfe"]),
)
def test_every_version_valid_or_poison_gives_the_same_envelope_or_dead_letter(
    data: st.DataObject, version: SchemaVersion, poison: bool, correlation: bytes | None
) -> None:
    schema = _text_schema(version) if poison else version.schema
    record = data.draw(_strategy(schema))
    for field in schema["fields"]:
        name = field["name"]
        if name in ("provider_response", "raw_attributes"):
            record[name] = data.draw(json_objects if poison else valid_json_objects)
        elif poison and _logical_uuid(version, name):
            record[name] = data.draw(uuid_texts)
        elif name == "correlation_id" and data.draw(st.booleans()):
            record[name] = ""
    value = encoded(version, schema, record)
    cut = data.draw(st.integers(0, len(value))) if poison else len(value)
    assert_same([message(version.topic, 0, value, correlation),
                 message(version.topic, 1, value[:cut], correlation)])  # fmt: skip


# the edges of Python's float repr and of JSON string escaping
edge_floats = st.sampled_from([1e15, 1e16, 1.5e16, 9999999999999998.0, 1e-4, 1e-5, 5e-324,
                               1.7976931348623157e308, -0.0, 0.3, 1.23456789e-5])  # fmt: skip
edge_text = st.text(alphabet=st.characters(max_codepoint=0x7F) | st.sampled_from("\u2028é😀"),
                    max_size=12)  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    record=receipt_records(),
    response=st.dictionaries(edge_text, edge_floats | edge_text | json_values, max_size=4),
    correlation=st.none() | edge_text,
)
def test_receipts_get_the_same_row_and_id(
    record: dict[str, Any], response: dict[str, Any], correlation: str | None
) -> None:
    codec = SingleObjectCodec()
    plain = codec.encode("delivery_receipt", record)
    record["provider_response"] = json.dumps(response, ensure_ascii=False)
    record["correlation_id"] = correlation
    edges = codec.encode("delivery_receipt", record)
    assert_same([message("receipts", 0, plain, None), message("receipts", 1, edges, None)])


# address keys as connectors spell them, and look-alikes that are not ASCII (kept by both paths)
address_keys = st.sampled_from(sorted(ADDRESS_KEYS)).flatmap(
    lambda k: st.sampled_from([k, k.upper(), k.title()])
) | st.sampled_from(["EMAİL", "\u0422o", "addre\u017f\u017f"])
nested_responses = st.recursive(
    json_values,
    lambda inner: (
        st.dictionaries(address_keys | edge_text, inner, max_size=3) | st.lists(inner, max_size=3)
    ),
    max_leaves=10,
)


def addresses_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if is_address_key(k)] + [
            a for v in value.values() for a in addresses_in(v)
        ]
    if isinstance(value, list):
        return [a for v in value for a in addresses_in(v)]
    return []


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    record=receipt_records(),
    response=st.dictionaries(address_keys | edge_text, nested_responses, max_size=4),
)
def test_receipts_keep_no_address_on_either_path(
    record: dict[str, Any], response: dict[str, Any]
) -> None:
    record["provider_response"] = json.dumps(response, ensure_ascii=False)
    record["destination"] = "lan@example.com"
    value = SingleObjectCodec().encode("delivery_receipt", record)
    polled = assert_same([message("receipts", 0, value, None)])
    for batch in polled.by_tenant.values():
        for e in batch:
            assert e.row is not None
            fields = copy_fields(e.row)
            assert fields[4] is None  # destination
            assert addresses_in(json.loads(str(fields[8]))) == []  # provider_response


_COPY_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def copy_fields(line: bytes) -> list[str | None]:
    """The fields of a COPY text line (``bulk.copy_line``): ``\\N`` is NULL, escapes undone."""
    return [
        None if field == "\\N" else re.sub(r"\\(.)", lambda m: _COPY_UNESCAPES[m[1]], field)
        for field in line.decode().removesuffix("\n").split("\t")
    ]


# what a label or a consent text may hold that COPY text or an array literal must escape
edge_labels = st.sampled_from(["", "NULL", "null", "nUlL", "a b", 'q"x', "b\\s", "{x}", "a,b",
                               "é", "x\ty", "\x0b", "l\x00", "\u2028", "x" * 200,
                               "x" * 201])  # fmt: skip
consent_facts = st.fixed_dictionaries({
    "channel": st.sampled_from(["email", "sms", "push", "zalo"]) | edge_text,
    "state": st.sampled_from(["granted", "revoked"]) | edge_text,
    "legal_basis": edge_text | st.sampled_from(["x" * 200, "x" * 201, "a\x00b"]),
    "source": edge_text | st.sampled_from(["web-form", "é" * 201]),
    "occurred_at": st.datetimes(timezones=st.just(UTC)),
})  # fmt: skip
UPSERT_VERSIONS = [v for v in INPUT_VERSIONS if v.kind == "profile_upsert"]


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.data(),
    version=st.sampled_from(UPSERT_VERSIONS),
    labels=st.lists(edge_labels | edge_text, max_size=5),
    consents=st.lists(consent_facts, max_size=4),
    attributes=st.dictionaries(edge_text, edge_floats | edge_text | json_values, max_size=4),
)
def test_profile_upserts_get_the_same_line_and_key(
    data: st.DataObject,
    version: SchemaVersion,
    labels: list[str],
    consents: list[dict[str, Any]],
    attributes: dict[str, Any],
) -> None:
    """Labels sorted and quoted, consents by channel (or poisoned), the content hash and the
    profile's key: the same either way, for every upsert version."""
    record = data.draw(_strategy(version.schema))
    names = {f["name"] for f in version.schema["fields"]}
    record["raw_attributes"] = json.dumps(attributes, ensure_ascii=False)
    if "data_labels" in names:
        record["data_labels"] = labels
    if "consents" in names:
        record["consents"] = consents
    value = encoded(version, version.schema, record)
    assert_same([message("profile-changes", 0, value, None)])


SEALED_LIMITS = {name: contracts._max_len(f"{name}_sealed") for name in SEALED_FIELDS}
PLAINTEXT_FIELDS = SEALED_FIELDS[:-1]  # raw_attributes has "{}" for none


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.data(),
    sealing=st.sampled_from(["sealed", "plaintext", "sealed, plaintext too", "sealed, no key"]),
    attributes=st.dictionaries(edge_text, edge_floats | edge_text | json_values, max_size=3),
)
def test_sealed_upserts_get_the_same_line_and_key(
    data: st.DataObject, sealing: str, attributes: dict[str, Any]
) -> None:
    """ProfileUpsert v4 as the key ring writes it (a key id, the personal fields sealed, none in
    plaintext, sealed fields up to and past their limits) is prepared natively; the same line,
    content hash and key, or the same dead letter, either way, for it and the shapes that
    poison it."""
    version = UPSERT_VERSIONS[-1]
    record = data.draw(_strategy(version.schema))
    record["raw_attributes"] = json.dumps(attributes, ensure_ascii=False)
    record["consents"] = data.draw(st.lists(consent_facts, max_size=2))
    record["key_id"] = None if sealing in ("plaintext", "sealed, no key") else uuid.uuid4()
    for name, limit in SEALED_LIMITS.items():
        sizes = st.sampled_from([limit, limit + 1]).flatmap(
            lambda n: st.binary(min_size=n, max_size=n)
        )
        sealed = st.none() | st.binary(max_size=40) | sizes
        record[f"{name}_sealed"] = None if sealing == "plaintext" else data.draw(sealed)
    if sealing == "sealed":
        record.update(dict.fromkeys(PLAINTEXT_FIELDS), raw_attributes="{}")
    elif sealing == "sealed, plaintext too" and data.draw(st.booleans()):
        record.update(dict.fromkeys(PLAINTEXT_FIELDS))  # then the attributes are the plaintext
    msg = message("profile-changes", 0, encoded(version, version.schema, record), None)
    got = assert_same([msg])
    fits = all(
        record[f"{name}_sealed"] is None or len(record[f"{name}_sealed"]) <= limit
        for name, limit in SEALED_LIMITS.items()
    )
    # what the native path leaves to the Python one: a NUL in a label (PostgreSQL refuses it
    # there), and whatever the Python path dead-letters
    nul_label = any("\x00" in label for label in record["data_labels"])
    if sealing == "sealed" and fits and not record["consents"] and not nul_label and not got.dead:
        [prepared] = NATIVE.prepare_native(["profile-changes"], [msg], [0], [0])
        assert prepared is not None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300), version=st.sampled_from(INPUT_VERSIONS),
       header=st.booleans())  # fmt: skip
def test_arbitrary_bytes_give_the_same_outcome(
    data: bytes, version: SchemaVersion, header: bool
) -> None:
    value = SINGLE_OBJECT_MAGIC + version.fingerprint + data if header else data
    assert_same([message(version.topic, 0, value, None), message(version.topic, 1, None, None)])


def test_a_corpus_is_prepared_natively_and_the_same() -> None:
    """The shapes the product meets are taken by the native path, not left to Python: profile
    upserts as the product's producers publish them, sealed (ProfileUpsert v4)."""
    c = corpus.build(3, n_tenants=2, n_profiles=8, n_segments=2, n_receipts=40)
    codec = SingleObjectCodec()
    ring = KeyRing()
    for topic in ("receipts", "profile-changes"):
        records: list[tuple[str, Mapping[str, Any]]] = [
            from_json(topic, m) for m in c.topics[topic]
        ]
        if topic == "profile-changes":
            sealed = ring.seal_all(records)
            records = [(kind, record) for t, kind, record in sealed if t == topic]
            assert any(r.get("key_id") for _, r in records)
        messages = [
            message(topic, i, codec.encode(kind, record), None)
            for i, (kind, record) in enumerate(records)
        ]
        polled = assert_same(messages)
        prepared = NATIVE.prepare_native(
            [topic] * len(messages), messages, [m.partition() or 0 for m in messages],
            [m.offset() or 0 for m in messages],
        )  # fmt: skip
        assert all(p is not None for p in prepared), topic
        assert sum(map(len, polled.by_tenant.values())) == len(messages)


pg_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


pg_labels = st.lists(pg_text | edge_labels.filter(lambda t: "\x00" not in t), max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    row=st.tuples(
        pg_text | edge_labels.filter(lambda t: "\x00" not in t),
        pg_labels,
        st.binary(max_size=40),
        st.datetimes(timezones=st.just(UTC)),
        st.uuids(),
        st.none() | st.integers(-(2**63), 2**63 - 1),
    ),
    more=st.tuples(pg_labels, st.lists(st.uuids(), max_size=3)),
)
def test_copy_lines_read_back_as_their_values(
    db: DbUrls,
    row: tuple[str, list[str], bytes, datetime, uuid.UUID, int | None],
    more: tuple[list[str], list[uuid.UUID]],
) -> None:
    """``bulk.copy_line``, which the native lines are held equal to, says what the row says:
    text, a text array, bytea, timestamptz, uuid and bigint read back as the values written; and
    fields added at the end of a ready line (``bulk.extended``, as the recorded segments and
    snapshots are to a profile's) read back as theirs."""
    with psycopg.connect(db.admin_url) as conn:
        conn.execute("CREATE TEMP TABLE t (a text, b text[], c bytea, d timestamptz, e uuid, "
                     "f bigint, g text[], h uuid[])")  # fmt: skip
        with conn.cursor() as cur, cur.copy("COPY t FROM STDIN") as copy:
            copy.write(extended(copy_line(row), copy_line(more)))
        assert conn.execute("SELECT * FROM t").fetchone() == row + more


def _drain(settings_: Settings, *, use_native: bool) -> None:
    engine = Engine(settings_, HANDLERS)
    engine.decoder = Decoder(engine.codec, HANDLERS, engine.logical_by_physical, engine.group,
                             native=use_native)  # fmt: skip
    assert (engine.decoder.native is not None) == use_native
    engine.run(until_idle=2.0)


def test_a_corpus_consumed_by_either_path_leaves_the_same_digest(
    stack: Endpoints, db: DbUrls, db_template: str, topic_prefix: str
) -> None:
    c = corpus.build(5, n_tenants=2, n_profiles=10, n_segments=2, n_receipts=60)
    python_settings = deployment_settings(stack, db, topic_prefix)
    publish_corpus(python_settings, c)
    _drain(python_settings, use_native=False)
    with fresh_database(stack, db_template) as other:
        native_settings = deployment_settings(stack, other, topic_prefix)
        _drain(native_settings, use_native=True)
        assert state_digest(native_settings) == state_digest(python_settings)
