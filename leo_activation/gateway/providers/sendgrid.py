"""SendGrid Event Webhook: a JSON array of events, signed with ECDSA P-256 / SHA-256 over the
timestamp header followed by the raw body (``X-Twilio-Email-Event-Webhook-Signature``, base64
DER; the verification key is the base64 DER public key SendGrid shows). Custom args sit at the
top level of each event."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from leo_activation.gateway.config import GatewayConfig, ProviderKeys
from leo_activation.gateway.events import (
    Inbound,
    Outcome,
    Refused,
    build,
    check_window,
    from_unix,
    json_body,
    secret,
)

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
STATUSES = {
    "processed": "sent",
    "deferred": "deferred",
    "delivered": "delivered",
    "bounce": "bounced",
    "dropped": "dropped",
    "open": "opened",
    "click": "clicked",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


class SendGrid:
    name = "sendgrid"

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
        if not signature or not timestamp:
            raise Refused(401, "missing signature or timestamp header")
        try:
            key = load_der_public_key(base64.b64decode(secret(keys, "public_key")))
            der = base64.b64decode(signature, validate=True)
            signed_at = float(timestamp)
        except (ValueError, binascii.Error, UnsupportedAlgorithm):
            raise Refused(401, "malformed signature, timestamp or configured key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Refused(401, "the configured public_key is not an ECDSA key")
        try:
            key.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Refused(401, "bad signature") from None
        check_window(signed_at, request, config)

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        body = json_body(request)
        if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
            raise Refused(400, "expected a JSON array of event objects")
        outcomes = []
        for event in body:
            outcomes.append(
                build(
                    request,
                    event,
                    provider=self.name,
                    channel="email",
                    status=STATUSES.get(str(event.get("event"))),
                    provider_status=event.get("event"),
                    occurred_at=from_unix(event.get("timestamp")),
                    metadata=event,
                    message_id=event.get("sg_message_id"),
                    event_id=event.get("sg_event_id"),
                )
            )
        return outcomes
