"""Amazon SES event publishing through an SNS HTTPS subscription.

SNS signs the canonical string of a message's fields — ``Name\\nValue\\n`` for each present field
in a fixed order, which differs between a Notification and a (Un)SubscriptionConfirmation — with
SHA1withRSA (``SignatureVersion`` 1) or SHA256withRSA (2). The key is a configured trusted
certificate; ``SigningCertURL`` is fetched only when the configuration allows it, and then only
from an SNS host of AWS. A SubscriptionConfirmation is confirmed (GET ``SubscribeURL``, AWS hosts
only) when the tenant's ``confirm_subscriptions`` is true; otherwise logged for the operator.

SES events carry the connector's metadata as message tags (``mail.tags``: name -> [value]).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import urllib.request
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from leo_activation.gateway.config import GatewayConfig, ProviderKeys
from leo_activation.gateway.events import (
    Inbound,
    Outcome,
    Refused,
    build,
    check_window,
    from_iso,
    json_body,
    obj,
    secret,
)

log = logging.getLogger("leo_activation.gateway.ses")

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                       "Type")  # fmt: skip
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
AWS_SNS_URL = re.compile(r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
# eventType (event publishing) or notificationType (identity notifications) -> (status, object
# holding the event's own timestamp)
STATUSES = {
    "Send": ("sent", "send"),
    "Delivery": ("delivered", "delivery"),
    "Bounce": ("bounced", "bounce"),
    "Complaint": ("complained", "complaint"),
    "Reject": ("dropped", "reject"),
    "Open": ("opened", "open"),
    "Click": ("clicked", "click"),
    "DeliveryDelay": ("deferred", "deliveryDelay"),
    "Rendering Failure": ("failed", "failure"),
    "Subscription": ("unsubscribed", "subscription"),
}


class Ses:
    name = "ses"

    def verify(self, request: Inbound, keys: ProviderKeys, config: GatewayConfig) -> None:
        message = _message(request)
        kind = message.get("Type")
        fields = NOTIFICATION_FIELDS if kind == "Notification" else CONFIRMATION_FIELDS
        if kind not in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"):
            raise Refused(400, f"unknown SNS message type {str(kind)[:40]!r}")
        algorithm = HASHES.get(str(message.get("SignatureVersion")))
        signature = message.get("Signature")
        if algorithm is None or not isinstance(signature, str):
            raise Refused(401, "missing signature or unknown SignatureVersion")
        arns = keys.get("topic_arns")
        if isinstance(arns, list) and message.get("TopicArn") not in arns:
            raise Refused(401, "the SNS topic is not one this tenant trusts")
        text = "".join(
            f"{name}\n{message[name]}\n" for name in fields if isinstance(message.get(name), str)
        )
        key = _public_key(keys, config, message.get("SigningCertURL"))
        try:
            key.verify(
                base64.b64decode(signature, validate=True),
                text.encode(),
                padding.PKCS1v15(),
                algorithm(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            raise Refused(401, "bad signature") from None
        signed_at = from_iso(message.get("Timestamp"))
        if signed_at is None:
            raise Refused(401, "missing or malformed Timestamp")
        check_window(signed_at.timestamp(), request, config)

    def events(self, request: Inbound, keys: ProviderKeys) -> list[Outcome]:
        message = _message(request)
        if message["Type"] != "Notification":
            _confirm(message, keys)
            return []
        try:
            event = json.loads(message.get("Message", ""))
        except (TypeError, json.JSONDecodeError):
            raise Refused(400, "the SNS Message is not an SES event (JSON)") from None
        if not isinstance(event, dict) or not isinstance(event.get("mail"), dict):
            raise Refused(400, "the SNS Message is not an SES event (no mail object)")
        mail = event["mail"]
        kind = event.get("eventType", event.get("notificationType"))
        status, detail_name = STATUSES.get(str(kind), (None, ""))
        detail = event.get(detail_name)
        occurred = from_iso(detail.get("timestamp")) if isinstance(detail, dict) else None
        tags = obj(mail.get("tags"))
        metadata = {k: v[0] for k, v in tags.items() if isinstance(v, list) and v}
        return [
            build(
                request,
                event,
                provider=self.name,
                channel="email",
                status=status,
                provider_status=kind,
                occurred_at=occurred or from_iso(mail.get("timestamp")),
                metadata=metadata,
                message_id=mail.get("messageId"),
                event_id=message.get("MessageId"),
            )
        ]


def _public_key(keys: ProviderKeys, config: GatewayConfig, cert_url: Any) -> rsa.RSAPublicKey:
    if keys.get("certificate") is not None:
        pem = secret(keys, "certificate").encode()
    elif (
        config.allow_certificate_fetch and isinstance(cert_url, str) and AWS_SNS_URL.match(cert_url)
    ):
        pem = _fetch(cert_url)
    else:
        raise Refused(401, "no trusted certificate configured for this tenant")
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError:
        raise Refused(401, "the trusted certificate does not parse") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(401, "the trusted certificate has no RSA key")
    return key


def _confirm(message: dict[str, Any], keys: ProviderKeys) -> None:
    url = message.get("SubscribeURL")
    if message["Type"] != "SubscriptionConfirmation" or not isinstance(url, str):
        return
    if keys.get("confirm_subscriptions") is True and AWS_SNS_URL.match(url):
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - https, AWS host
            answer.read()
        log.info("confirmed the SNS subscription to %s", message.get("TopicArn"))
    else:
        log.warning(
            "SNS subscription to %s awaits confirmation: GET its SubscribeURL %s",
            message.get("TopicArn"),
            url,
        )


def _message(request: Inbound) -> dict[str, Any]:
    message = json_body(request)
    if not isinstance(message, dict):
        raise Refused(400, "expected an SNS message (a JSON object)")
    return message


@functools.lru_cache(maxsize=32)
def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - https, AWS host only
        data: bytes = answer.read()
    return data
