"""Postmark webhooks: one JSON event per request, ``RecordType`` Delivery, Bounce, Open, Click,
SpamComplaint or SubscriptionChange; authenticated with HTTP basic auth (credentials put in the
webhook URL). Postmark signs nothing and sends no signed time, so there is no replay window: the
credentials are the whole check. The connector's metadata are the message's ``Metadata``."""

from __future__ import annotations

import base64
import binascii

from leo_activation.gateway.config import GatewayConfig, ProviderKeys
from leo_activation.gateway.events import (
    Inbound,
    Outcome,
    Refused,
    build,
    from_iso,
    json_body,
    same,
    secret,
)

# RecordType -> (status, field holding the event's time)
STATUSES = {
    "Delivery": ("delivered", "DeliveredAt"),
    "Bounce": ("bounced", "BouncedAt"),
    "Open": ("opened", "ReceivedAt"),
    "Click": ("clicked", "ReceivedAt"),
    "SpamComplaint": ("complained", "BouncedAt"),
    "SubscriptionChange": ("unsubscribed", "ChangedAt"),
}
SOFT_BOUNCES = {"SoftBounce", "Transient", "DnsError", "AutoResponder"}


class Postmark:
    name = "postmark"

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Refused(401, "missing basic credentials")
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise Refused(401, "malformed basic credentials") from None
        expected = f"{secret(keys, 'username')}:{secret(keys, 'password')}".encode()
        if not same(expected, given):
            raise Refused(401, "bad credentials")

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        event = json_body(request)
        if not isinstance(event, dict) or "RecordType" not in event:
            raise Refused(400, "expected a Postmark event object with a RecordType")
        kind = event["RecordType"]
        status, time_field = STATUSES.get(str(kind), (None, ""))
        if kind == "Bounce" and event.get("Type") in SOFT_BOUNCES:
            status = "deferred"
        if kind == "SubscriptionChange" and event.get("SuppressSending") is not True:
            status = None  # a resubscription: nothing in the vocabulary says it
        return [
            build(
                request,
                event,
                provider=self.name,
                channel="email",
                status=status,
                provider_status=kind,
                occurred_at=from_iso(event.get(time_field)),
                metadata=event.get("Metadata"),
                message_id=event.get("MessageID"),
                event_id=f"{event.get('MessageID')}:{kind}:{event.get(time_field)}",
            )
        ]
