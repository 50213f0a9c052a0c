"""Mailgun webhooks: JSON ``{"signature": {timestamp, token, signature}, "event-data": {...}}``;
``signature`` is hex HMAC-SHA256 (the webhook signing key) of timestamp followed by token. The
connector's metadata are the message's user-variables."""

from __future__ import annotations

import hashlib
import hmac

from leo_activation.gateway.config import GatewayConfig, ProviderKeys
from leo_activation.gateway.events import (
    Inbound,
    Outcome,
    Refused,
    build,
    check_window,
    from_unix,
    json_body,
    obj,
    same,
    secret,
)

STATUSES = {
    "accepted": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


class Mailgun:
    name = "mailgun"

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        body = json_body(request)
        signed = body.get("signature") if isinstance(body, dict) else None
        if not isinstance(signed, dict) or not all(
            isinstance(signed.get(k), str) for k in ("timestamp", "token", "signature")
        ):
            raise Refused(401, "missing signature object (timestamp, token, signature)")
        text = (signed["timestamp"] + signed["token"]).encode()
        mac = hmac.new(secret(keys, "signing_key").encode(), text, hashlib.sha256).hexdigest()
        if not same(mac, signed["signature"]):
            raise Refused(401, "bad signature")
        signed_at = from_unix(signed["timestamp"])
        if signed_at is None:
            raise Refused(401, "malformed signature timestamp")
        check_window(signed_at.timestamp(), request, config)

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        body = json_body(request)
        event = body.get("event-data") if isinstance(body, dict) else None
        if not isinstance(event, dict):
            raise Refused(400, "expected an event-data object")
        kind = event.get("event")
        status = STATUSES.get(str(kind))
        if kind == "failed":  # temporary: Mailgun retries; permanent: a bounce or a suppression
            reason = str(event.get("reason", ""))
            if event.get("severity") == "temporary":
                status = "deferred"
            else:
                status = "dropped" if reason.startswith("suppress") else "bounced"
        message = obj(event.get("message"))
        headers = obj(message.get("headers"))
        return [
            build(
                request,
                event,
                provider=self.name,
                channel="email",
                status=status,
                provider_status=kind,
                occurred_at=from_unix(event.get("timestamp")),
                metadata=event.get("user-variables"),
                message_id=headers.get("message-id"),
                event_id=event.get("id"),
            )
        ]
