"""Zalo OA webhooks: a JSON event; ``X-ZEvent-Signature: mac=<hex>`` where the mac is SHA-256 of
app id + the raw body + the event's ``timestamp`` (milliseconds, as written in the body) + the
OA secret key. A ZNS message carries the connector's ``tracking_id``: the delivery id (the
tenant is the one of the endpoint)."""

from __future__ import annotations

import hashlib

from leo_activation.gateway.config import GatewayConfig, ProviderKeys
from leo_activation.gateway.events import (
    DELIVERY_FIELD,
    Inbound,
    Outcome,
    Refused,
    build,
    check_window,
    from_unix_ms,
    json_body,
    obj,
    same,
    secret,
)

SIGNATURE = "x-zevent-signature"
STATUSES = {"user_received_message": "delivered", "user_seen_message": "read"}


class Zalo:
    name = "zalo"

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        header = request.headers.get(SIGNATURE, "")
        if not header.startswith("mac="):
            raise Refused(401, "missing X-ZEvent-Signature mac")
        body = json_body(request)
        timestamp = body.get("timestamp") if isinstance(body, dict) else None
        if not isinstance(timestamp, str | int) or isinstance(timestamp, bool):
            raise Refused(401, "the event has no timestamp to check the mac with")
        text = b"".join((secret(keys, "app_id").encode(), request.body, str(timestamp).encode(),
                         secret(keys, "oa_secret_key").encode()))  # fmt: skip
        mac = hashlib.sha256(text).hexdigest()
        if not same(mac, header[4:]):
            raise Refused(401, "bad signature")
        signed_at = from_unix_ms(timestamp)
        if signed_at is None:
            raise Refused(401, "malformed timestamp")
        check_window(signed_at.timestamp(), request, config)

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        event = json_body(request)
        if not isinstance(event, dict) or not isinstance(event.get("event_name"), str):
            raise Refused(400, "expected a Zalo event object with an event_name")
        kind = event["event_name"]
        message = obj(event.get("message"))
        delivered_ms = message.get("delivery_time", event.get("timestamp"))
        occurred = from_unix_ms(delivered_ms)
        return [
            build(
                request,
                event,
                provider=self.name,
                channel="zalo",
                status=STATUSES.get(kind),
                provider_status=kind,
                occurred_at=occurred,
                metadata={DELIVERY_FIELD: message.get("tracking_id")},
                message_id=message.get("msg_id"),
                event_id=f"{message.get('msg_id')}:{kind}",
            )
        ]
