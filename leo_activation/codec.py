"""Avro contracts and their framing on the wire.

Every message type is one Avro record schema under ``schemas/<topic>/<Name>.v<N>.avsc``; a topic
carries a fixed set of types. Two framings:

* default — Avro single-object encoding: ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO
  fingerprint + the Avro body. The fingerprint names the exact schema version, so every version
  ever shipped stays readable: the body is resolved from its writer version to the newest one.
* Schema Registry (``LEO_SCHEMA_REGISTRY_URL``): the Confluent wire format (``00`` + 4-byte
  schema id), schemas registered under the record name (RecordNameStrategy: many types a topic).

Decoding failures raise :class:`PoisonMessage`: the engine dead-letters them. A Schema Registry
that does not answer is not the message's fault: decoding waits for it, then raises a
:class:`LeoError` that stops the consumer with its offsets uncommitted.
"""

from __future__ import annotations

import io
import json
import re
import struct
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import fastavro
import fastavro.schema
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from leo_activation.errors import LeoError, PoisonMessage, first_line
from leo_activation.resources import schemas_dir
from leo_activation.settings import Settings

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
REGISTRY_RETRY_S = 60.0  # how long decoding waits for an unavailable Schema Registry
REGISTRY_MAGIC = b"\x00"
_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z]\w*)\.v(?P<version>\d+)\.avsc$")


def kind_of(record_name: str) -> str:
    """``DeliveryReceipt`` -> ``delivery_receipt``: the ``type`` of a message in JSON Lines."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", record_name).lower()


@dataclass(frozen=True)
class SchemaVersion:
    topic: str  # logical topic (folder name)
    name: str  # record name, e.g. DeliveryReceipt
    kind: str  # snake_case name used in JSON Lines
    version: int
    schema: dict[str, Any]  # the .avsc as written (for registries)
    parsed: Any  # fastavro-parsed
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the parsing canonical form


@dataclass(frozen=True)
class Catalog:
    """Every schema version shipped, indexed for encoding and decoding."""

    versions: tuple[SchemaVersion, ...]

    @property
    def by_fingerprint(self) -> dict[bytes, SchemaVersion]:
        return {v.fingerprint: v for v in self.versions}

    @cached_property
    def _latest(self) -> dict[str, SchemaVersion]:
        newest: dict[str, SchemaVersion] = {}
        for v in self.versions:
            if v.kind not in newest or v.version > newest[v.kind].version:
                newest[v.kind] = v
        return newest

    def latest(self, kind: str) -> SchemaVersion:
        """The newest shipped version of a message type (the reader schema): looked up for
        every message, so worked out once."""
        return self._latest[kind]

    def kinds(self, topic: str) -> list[str]:
        return sorted({v.kind for v in self.versions if v.topic == topic})


def _load_version(path: Path) -> SchemaVersion:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: schema files are named <RecordName>.v<N>.avsc")
    schema = json.loads(path.read_text(encoding="utf-8"))
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return SchemaVersion(
        topic=path.parent.name,
        name=match["name"],
        kind=kind_of(match["name"]),
        version=int(match["version"]),
        schema=schema,
        # parsed once with fastavro's "already parsed" hint: without it schemaless_reader and
        # schemaless_writer re-parse writer and reader schema on every message (20.6 -> 8.7 us
        # a receipt)
        parsed=fastavro.parse_schema(schema),
        fingerprint=bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")),
    )


@cache
def catalog(root: Path | None = None) -> Catalog:
    base = root or schemas_dir()
    return Catalog(tuple(_load_version(p) for p in sorted(base.glob("*/*.avsc"))))


class Codec(Protocol):
    def encode(self, kind: str, record: Mapping[str, Any]) -> bytes: ...

    def decode(self, topic: str, data: bytes | None) -> tuple[str, dict[str, Any]]: ...


def _write_body(version: SchemaVersion, record: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, version.parsed, dict(record))
    return out.getvalue()


def _read_body(body: bytes, writer: SchemaVersion, reader: SchemaVersion) -> dict[str, Any]:
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, writer.parsed, reader.parsed)
    except UnicodeDecodeError as exc:
        raise PoisonMessage(
            "invalid_utf8", f"{writer.name}: a string is not UTF-8 ({exc})"
        ) from exc
    except (EOFError, StopIteration, struct.error) as exc:
        raise PoisonMessage("truncated", f"{writer.name}: body ends early") from exc
    except Exception as exc:  # fastavro raises plain ValueError/IndexError etc. on bad bodies
        if _raised_by_uuid(exc):
            raise PoisonMessage("bad_uuid", f"{writer.name}: a uuid field is malformed") from exc
        reason = f"{writer.name}: {type(exc).__name__}: {first_line(exc)}"[:500]
        raise PoisonMessage("avro_decode", reason) from exc
    if stream.tell() != len(body):
        raise PoisonMessage(
            "trailing_bytes", f"{writer.name}: {len(body) - stream.tell()} bytes left"
        )
    if not isinstance(record, dict):
        raise PoisonMessage("avro_decode", f"{writer.name}: not a record")
    return record


def _raised_by_uuid(exc: BaseException) -> bool:
    """Whether the uuid logical type's parse failed: its messages vary (``badly formed``, an
    ``int()`` of a non-hex digit), where it was raised does not."""
    return any(frame.filename == uuid.__file__ for frame in traceback.extract_tb(exc.__traceback__))


class SingleObjectCodec:
    """Self-describing framing resolved against the schemas shipped in ``schemas/``."""

    def __init__(self, cat: Catalog | None = None) -> None:
        self.catalog = cat or catalog()
        self._by_fp = self.catalog.by_fingerprint

    def encode(self, kind: str, record: Mapping[str, Any]) -> bytes:
        version = self.catalog.latest(kind)
        return SINGLE_OBJECT_MAGIC + version.fingerprint + _write_body(version, record)

    def decode(self, topic: str, data: bytes | None) -> tuple[str, dict[str, Any]]:
        if not data:
            raise PoisonMessage("empty", "message has no value")
        if len(data) < 10:
            raise PoisonMessage(
                "truncated", f"{len(data)} bytes is shorter than the 10-byte header"
            )
        if data[:2] != SINGLE_OBJECT_MAGIC:
            raise PoisonMessage(
                "bad_magic", f"header {data[:2].hex()} is not Avro single-object c301"
            )
        writer = self._by_fp.get(data[2:10])
        if writer is None:
            raise PoisonMessage(
                "unknown_schema", f"no shipped schema has fingerprint {data[2:10].hex()}"
            )
        if writer.topic != topic:
            raise PoisonMessage(
                "wrong_topic", f"{writer.name} belongs on topic {writer.topic!r}, not {topic!r}"
            )
        reader = self.catalog.latest(writer.kind)
        return writer.kind, _read_body(data[10:], writer, reader)


class RegistryCodec:
    """Confluent wire format through a Schema Registry (``mock://`` works for tests)."""

    def __init__(
        self,
        url: str,
        cat: Catalog | None = None,
        retry_s: float = REGISTRY_RETRY_S,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        # mock:// for tests; client_config: authentication and TLS (registry_config)
        self.client = SchemaRegistryClient.new_client({**(client_config or {}), "url": url})
        self.catalog = cat or catalog()
        self.retry_s = retry_s
        self._ids: dict[str, int] = {}
        self._writers: dict[int, SchemaVersion] = {}

    def _register(self, version: SchemaVersion) -> int:
        key = f"{version.name}.v{version.version}"
        if key not in self._ids:
            subject = f"{version.schema['namespace']}.{version.name}"
            schema = Schema(json.dumps(version.schema), "AVRO")
            self._ids[key] = int(self.client.register_schema(subject, schema))
        return self._ids[key]

    def encode(self, kind: str, record: Mapping[str, Any]) -> bytes:
        version = self.catalog.latest(kind)
        schema_id = self._register(version)
        return REGISTRY_MAGIC + struct.pack(">I", schema_id) + _write_body(version, record)

    def _writer(self, schema_id: int) -> SchemaVersion:
        if schema_id not in self._writers:
            registered = self._fetch(schema_id)
            canonical = fastavro.schema.to_parsing_canonical_form(
                json.loads(registered.schema_str or "null")
            )
            fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
            shipped = self.catalog.by_fingerprint.get(fp)
            if shipped is None:
                raise PoisonMessage("unknown_schema", f"schema id {schema_id} is not one we ship")
            self._writers[schema_id] = shipped
        return self._writers[schema_id]

    def _fetch(self, schema_id: int) -> Schema:
        """The registered schema. Only the registry's "not found" makes a message poison; while
        the registry is unreachable or failing, decoding waits (up to ``retry_s``) and then
        gives up with a ``LeoError``: the consumer stops with nothing committed instead of
        dead-lettering good messages."""
        try:
            for attempt in Retrying(
                retry=retry_if_exception(_registry_transient),
                wait=wait_exponential_jitter(multiplier=0.2, max=5),
                stop=stop_after_delay(self.retry_s),
                reraise=True,
            ):
                with attempt:
                    return self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == HTTPStatus.NOT_FOUND:
                raise PoisonMessage(
                    "unknown_schema", f"registry has no schema id {schema_id}"
                ) from exc
            raise LeoError(f"schema registry refused schema id {schema_id}: {exc}") from exc
        except Exception as exc:
            raise LeoError(f"schema registry unavailable for {self.retry_s:.0f}s: {exc}") from exc
        raise AssertionError("unreachable")

    def decode(self, topic: str, data: bytes | None) -> tuple[str, dict[str, Any]]:
        if not data:
            raise PoisonMessage("empty", "message has no value")
        if len(data) < 5:
            raise PoisonMessage("truncated", f"{len(data)} bytes is shorter than the 5-byte header")
        if data[:1] != REGISTRY_MAGIC:
            raise PoisonMessage(
                "bad_magic", f"header {data[:1].hex()} is not Confluent wire format 00"
            )
        writer = self._writer(struct.unpack(">I", data[1:5])[0])
        if writer.topic != topic:
            raise PoisonMessage(
                "wrong_topic", f"{writer.name} belongs on topic {writer.topic!r}, not {topic!r}"
            )
        return writer.kind, _read_body(data[5:], writer, self.catalog.latest(writer.kind))


def _registry_transient(exc: BaseException) -> bool:
    """A registry error worth waiting out: no answer, a server error, or "slow down"."""
    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code >= 500 or exc.http_status_code in (408, 429)
    return True


def registry_config(settings: Settings) -> dict[str, Any]:
    """The Schema Registry client's basic authentication and TLS trust, from the settings."""
    config: dict[str, Any] = {}
    if settings.schema_registry_username is not None:
        secret = settings.schema_registry_password
        password = secret.get_secret_value() if secret is not None else ""
        config["basic.auth.user.info"] = f"{settings.schema_registry_username}:{password}"
    if settings.schema_registry_ca_location is not None:
        config["ssl.ca.location"] = settings.schema_registry_ca_location
    return config


def make_codec(settings: Settings | None) -> Codec:
    """The Schema Registry codec when the settings name a registry, else single-object Avro."""
    if settings is None or not settings.schema_registry_url:
        return SingleObjectCodec()
    return RegistryCodec(settings.schema_registry_url, client_config=registry_config(settings))
