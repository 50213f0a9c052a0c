"""What a provider module gets (an :class:`Inbound` request) and gives back (receipts, events it
could not map, or a :class:`Refused` for the whole request)."""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from leo_activation.addresses import without_addresses
from leo_activation.gateway.config import GatewayConfig, ProviderKeys, Secret

# the names a connector gives the metadata it attaches (SendGrid custom_args, Mailgun
# user-variables, Postmark Metadata, SES message tags, Twilio status-callback URL parameters)
TENANT_FIELD = "leo_tenant_id"
DELIVERY_FIELD = "leo_delivery_id"


class Refused(Exception):
    """The whole request is refused with ``status``; nothing of it is produced."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Inbound:
    url: str  # as the provider addressed it (public base URL + path + query)
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    body: bytes
    tenant_id: str  # from the path: whose keys verified the request
    now: float  # unix time, only to judge signed timestamps


@dataclass(frozen=True)
class Receipt:
    record: dict[str, Any]  # a DeliveryReceipt


@dataclass(frozen=True)
class Unmapped:
    error_class: str
    reason: str
    raw: bytes  # the event as the provider sent it


Outcome = Receipt | Unmapped


class Provider(Protocol):
    name: str

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        """Raise :class:`Refused` (401) unless the request is the provider's, signed in time."""

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        """The request's events; :class:`Refused` (400) if the body is not the provider's shape."""


def obj(value: Any) -> dict[str, Any]:
    """A JSON object of the payload, or an empty one if the provider sent something else there."""
    return value if isinstance(value, dict) else {}


def secret(keys: ProviderKeys, name: str) -> str:
    value = keys.get(name)
    if not isinstance(value, Secret):
        raise Refused(401, f"no {name} is configured for this tenant")
    return value.value


def same(expected: str | bytes, given: str | bytes) -> bool:
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def check_window(signed_at: float, request: Inbound, config: GatewayConfig) -> None:
    if abs(request.now - signed_at) > config.timestamp_tolerance_s:
        raise Refused(401, "the signed timestamp is outside the accepted window")


def json_body(request: Inbound) -> Any:
    try:
        return json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None


def canonical(obj: Any) -> bytes:
    """One byte string per JSON value: the same event always gives the same receipt."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def from_unix(seconds: Any) -> datetime | None:
    """A unix time in seconds (a number, or its decimal text) -> UTC, or None if it is none."""
    if isinstance(seconds, bool):
        return None
    try:
        return datetime.fromtimestamp(float(seconds), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def from_unix_ms(millis: Any) -> datetime | None:
    """Milliseconds since the epoch, as a number or as digits, exactly (no float rounding)."""
    text = str(millis)
    if isinstance(millis, bool) or not text.isdigit() or len(text) > 15:
        return None
    return datetime.fromtimestamp(int(text) // 1000, UTC) + timedelta(milliseconds=int(text) % 1000)


def from_iso(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def build(
    request: Inbound,
    raw: Any,
    *,
    provider: str,
    channel: str,
    status: str | None,
    provider_status: object,
    occurred_at: datetime | None,
    metadata: Mapping[str, Any] | None,
    message_id: object = None,
    event_id: object = None,
) -> Outcome:
    """The receipt of one event, or why there is none. A tenant named in the event's metadata
    must be the one whose key signed it. Neither the receipt nor a dead letter keeps the
    recipient's address (``addresses.without_addresses``): an erasure could not reach it in the
    receipts or dead-letter topics, kept for ever."""
    raw_bytes = canonical(without_addresses(raw))
    meta = metadata if isinstance(metadata, Mapping) else {}
    claimed = meta.get(TENANT_FIELD)
    if claimed is not None and _uuid_text(claimed) != request.tenant_id:
        raise Refused(403, "an event names another tenant than the one whose key signed it")
    delivery = _uuid_text(meta.get(DELIVERY_FIELD))
    if delivery is None:
        return Unmapped("no_delivery_id", f"{provider}: no {DELIVERY_FIELD} uuid", raw_bytes)
    if status is None:
        return Unmapped(
            "unknown_status", f"{provider}: status {str(provider_status)[:80]!r}", raw_bytes
        )
    if occurred_at is None:
        return Unmapped("no_time", f"{provider}: the event carries no usable time", raw_bytes)
    return Receipt(
        {
            "tenant_id": request.tenant_id,
            "delivery_id": delivery,
            "provider": provider,
            "provider_message_id": None if message_id is None else str(message_id),
            "status": status,
            "occurred_at": occurred_at,
            "destination": None,
            "channel": channel,
            "provider_response": raw_bytes.decode(),
            "correlation_id": None if event_id is None else f"{provider}:{event_id}",
        }
    )


def _uuid_text(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value is not None else None
    except ValueError:
        return None
