"""Deterministic ids: every stored id is a pure function of tenant + natural key, so a replay
reproduces them.

An id is UUIDv5 over a canonical encoding of ``[kind, tenant_id, *natural_key]`` (compact JSON,
sorted keys, UTF-8) in a namespace derived from ``ID_SCHEME``. Changing how any id is derived means
bumping ``ID_SCHEME``, which changes every id at once and visibly (``digest`` covers ids).

Stored as PostgreSQL ``uuid`` (16 bytes), never as hex text.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from leo_activation.errors import UsageError

ID_SCHEME = "leo-activation/ids/v1"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, ID_SCHEME)


def parse(value: str, what: str) -> uuid.UUID:
    """A user-given id as a UUID, or a usage error naming ``what`` it was meant to be."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a uuid") from None


def _canonical_default(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot canonicalise {type(value).__name__} into an id")


def canonical_json(value: Any) -> str:
    """The one canonical text form used for ids and digests: compact, key-sorted, UTF-8."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_canonical_default,
        allow_nan=False,
    )


# RFC 4122 variant bits over the high hex digit of byte 8: 10xx
_VARIANT_DIGIT = {f"{d:x}": f"{(d & 0x3) | 0x8:x}" for d in range(16)}


def uuid5_text(name: str, namespace: uuid.UUID = _NAMESPACE) -> str:
    """``str(uuid.uuid5(namespace, name))``, written straight from the SHA-1 hex digest: the
    same text without building and formatting a ``uuid.UUID`` (a hot path of bulk consumers)."""
    data = namespace.bytes + name.encode("utf-8")
    h = hashlib.sha1(data, usedforsecurity=False).hexdigest()  # uuid5 is SHA-1 by definition
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


def derive(kind: str, tenant_id: uuid.UUID | str, *natural_key: object) -> uuid.UUID:
    """The id of a ``kind`` of thing for a tenant, from its natural key."""
    return uuid.uuid5(_NAMESPACE, canonical_json([kind, str(tenant_id), *natural_key]))


def campaign_id(tenant_id: uuid.UUID | str, campaign_code: str) -> uuid.UUID:
    return derive("campaign", tenant_id, campaign_code)


def event_id(tenant_id: uuid.UUID | str, campaign_code: str, event_key: str) -> uuid.UUID:
    return derive("marketing_event", tenant_id, campaign_code, event_key)


def snapshot_id(tenant_id: uuid.UUID | str, segment_key: str, as_of_sequence: int) -> uuid.UUID:
    return derive("segment_snapshot", tenant_id, segment_key, as_of_sequence)


def task_id(tenant_id: uuid.UUID | str, task_key: str) -> uuid.UUID:
    return derive("agent_task", tenant_id, task_key)


def dispatch_id(tenant_id: uuid.UUID | str, dispatch_key: str) -> uuid.UUID:
    return derive("dispatch", tenant_id, dispatch_key)


def delivery_id(
    tenant_id: uuid.UUID | str, event: uuid.UUID | str, profile: uuid.UUID | str
) -> uuid.UUID:
    """One delivery per (event, recipient): re-dispatching the same event reuses it."""
    return derive("delivery", tenant_id, str(event), str(profile))


def delivery_fact_id(
    tenant_id: uuid.UUID | str, delivery: uuid.UUID | str, fact: Mapping[str, Any] | Sequence[Any]
) -> uuid.UUID:
    """The delivery_log row id of one fact about a delivery (queued, suppressed, a receipt),
    over the fact's whole content: identical duplicates collapse, different facts both stay."""
    return derive("delivery_log", tenant_id, str(delivery), fact)
