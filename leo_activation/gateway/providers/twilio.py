"""Twilio Messaging status callbacks: form-encoded, ``X-Twilio-Signature`` = base64 HMAC-SHA1 (auth
token) over the full URL followed by every POST parameter's name and value, sorted by name.

A status callback carries no time of its own, so the connector puts the send time in the
status-callback URL (``leo_sent_at``, unix microseconds; signed with the URL) and each status
is placed a microsecond per lifecycle step after it: a retry gives the same time, and the ladder
sent < delivered < read keeps its order."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from leo_activation.gateway.config import GatewayConfig, ProviderKeys
from leo_activation.gateway.events import (
    DELIVERY_FIELD,
    TENANT_FIELD,
    Inbound,
    Outcome,
    Refused,
    build,
    same,
    secret,
)

SIGNATURE = "x-twilio-signature"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SENT_AT_FIELD = "leo_sent_at"
# status -> (receipt status, lifecycle step)
STATUSES = {
    "accepted": (None, 0),
    "scheduled": (None, 0),
    "queued": (None, 0),
    "sending": (None, 1),
    "sent": ("sent", 2),
    "delivered": ("delivered", 3),
    "undelivered": ("failed", 3),
    "failed": ("failed", 3),
    "read": ("read", 4),
}


class Twilio:
    name = "twilio"

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        signature = request.headers.get(SIGNATURE)
        if not signature:
            raise Refused(401, "missing X-Twilio-Signature")
        params = sorted(_form(request))
        text = request.url + "".join(name + value for name, value in params)
        mac = hmac.new(secret(keys, "auth_token").encode(), text.encode(), hashlib.sha1)
        if not same(base64.b64encode(mac.digest()), signature):
            raise Refused(401, "bad signature")

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        form = dict(_form(request))
        if "MessageSid" not in form or "MessageStatus" not in form:
            raise Refused(400, "expected MessageSid and MessageStatus form fields")
        status, step = STATUSES.get(form["MessageStatus"], (None, 0))
        sent_at = request.query.get(SENT_AT_FIELD)
        base = _sent_at(sent_at)
        if form["MessageStatus"] in STATUSES and status is None:
            # queued and sending: Twilio's own steps before the carrier, nothing to record
            return []
        metadata = {
            TENANT_FIELD: request.query.get(TENANT_FIELD),
            DELIVERY_FIELD: request.query.get(DELIVERY_FIELD),
        }
        return [
            build(
                request,
                form,
                provider=self.name,
                channel="sms",
                status=status,
                provider_status=form["MessageStatus"],
                occurred_at=None if base is None else base + timedelta(microseconds=step),
                metadata={k: v for k, v in metadata.items() if v is not None},
                message_id=form["MessageSid"],
                event_id=f"{form['MessageSid']}:{form['MessageStatus']}",
            )
        ]


def _sent_at(micros: str | None) -> datetime | None:
    if micros is None or not (micros.isascii() and micros.isdigit()) or len(micros) > 17:
        return None
    return EPOCH + timedelta(microseconds=int(micros))


def _form(request: Inbound) -> list[tuple[str, str]]:
    try:
        return parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refused(400, "the form body is not UTF-8") from None
