"""The webhook gateway over real HTTP (a uvicorn server this test starts), the real broker and the
real database: every provider's documented payloads, signed by its documented algorithm with keys
made here, become delivery_log rows; every refusal produces nothing; retries and reordering give
the same digest; unmappable events are dead-lettered; Kafka away means 503."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from leo_activation.addresses import without_addresses
from leo_activation.codec import make_codec
from leo_activation.contracts import from_json
from leo_activation.dev.stack import Endpoints
from leo_activation.ops.dead_letters import list_dead_letters
from leo_activation.ops.digest import state_digest
from leo_activation.ops.trace import read_trace, render_delivery
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_app import deployment_settings, drain, read_topic
from tests.fix_db import fresh_database, tenant_tx

REPO = Path(__file__).resolve().parent.parent
TENANT = str(uuid.uuid5(uuid.NAMESPACE_OID, "test-gateway:tenant"))
OTHER = str(uuid.uuid5(uuid.NAMESPACE_OID, "test-gateway:other"))
T0 = 1_767_312_000  # 2026-01-02T00:00:00Z, the provider's clock in these payloads


def delivery(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"test-gateway:delivery:{name}"))


# ------------------------------------------------------------------ keys, made for the test
@dataclass(frozen=True)
class Keys:
    sendgrid: ec.EllipticCurvePrivateKey
    sns: rsa.RSAPrivateKey
    sns_cert_pem: str
    twilio_token: str = "twilio-auth-token-test"
    mailgun_key: str = "mailgun-signing-key-test"
    postmark_user: str = "postmark"
    postmark_password: str = "postmark-password-test"
    zalo_app_id: str = "1234567890"
    zalo_secret: str = "zalo-oa-secret-test"
    topic_arn: str = "arn:aws:sns:us-east-1:123456789012:ses-events"


def make_keys() -> Keys:
    sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(sns.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(sns, hashes.SHA256())
    )
    return Keys(
        sendgrid=ec.generate_private_key(ec.SECP256R1()),
        sns=sns,
        sns_cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def config_text(keys: Keys, tenants: list[str], **general: Any) -> str:
    public = keys.sendgrid.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    lines = ["[gateway]"] + [f"{k} = {json.dumps(v)}" for k, v in general.items()]
    for i, tenant in enumerate(tenants):
        # the second tenant gets other secrets: its key must not verify the first one's requests
        suffix = "" if i == 0 else f"-{i}"
        lines += [
            f'[tenants."{tenant}".sendgrid]',
            f'public_key = "{base64.b64encode(public).decode() if i == 0 else other_ec_key()}"',
            f'[tenants."{tenant}".twilio]',
            f'auth_token = "{keys.twilio_token}{suffix}"',
            f'[tenants."{tenant}".ses]',
            f"certificate = {json.dumps(keys.sns_cert_pem)}",
            f'topic_arns = ["{keys.topic_arn}{suffix}"]',
            f'[tenants."{tenant}".mailgun]',
            'signing_key = "env:TEST_MAILGUN_KEY"' if i == 0 else f'signing_key = "x{suffix}"',
            f'[tenants."{tenant}".postmark]',
            f'username = "{keys.postmark_user}"',
            f'password = "{keys.postmark_password}{suffix}"',
            f'[tenants."{tenant}".zalo]',
            f'app_id = "{keys.zalo_app_id}"',
            f'oa_secret_key = "{keys.zalo_secret}{suffix}"',
        ]
    return "\n".join(lines) + "\n"


def other_ec_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


# ------------------------------------------------------------------ signed requests per provider
@dataclass(frozen=True)
class Call:
    path: str  # /v1/<provider>/<tenant>?query
    body: bytes
    headers: dict[str, str]


def sendgrid(
    keys: Keys, events: list[dict[str, Any]], *, tenant: str = TENANT, signed_at: int | None = None
) -> Call:
    body = json.dumps(events).encode()
    timestamp = str(signed_at if signed_at is not None else int(time.time()))
    signature = keys.sendgrid.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return Call(
        f"/v1/sendgrid/{tenant}",
        body,
        {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )


def sendgrid_event(event: str, name: str, offset_s: int, **extra: Any) -> dict[str, Any]:
    """The shape of SendGrid's Event Webhook sample, custom args at the top level."""
    return {
        "email": "lan@example.com",
        "timestamp": T0 + offset_s,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["tet"],
        "sg_event_id": f"sg-{name}-{event}",
        "sg_message_id": f"14c5d75ce93.dfd.64b469.{name}.0",
        "leo_tenant_id": TENANT,
        "leo_delivery_id": delivery(name),
        **extra,
    }


def twilio(
    keys: Keys,
    base_url: str,
    status: str,
    name: str,
    *,
    tenant: str = TENANT,
    token: str | None = None,
) -> Call:
    query = urlencode({"leo_delivery_id": delivery(name), "leo_sent_at": (T0 + 60) * 1_000_000})
    path = f"/v1/twilio/{tenant}?{query}"
    params = {
        "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "ApiVersion": "2010-04-01",
        "From": "+15017122661",
        "To": "+84901234567",
        "MessageSid": f"SM{name:0>32}",
        "SmsSid": f"SM{name:0>32}",
        "SmsStatus": status,
        "MessageStatus": status,
    }
    if status == "undelivered":
        params["ErrorCode"] = "30003"
    text = base_url + path + "".join(k + params[k] for k in sorted(params))
    mac = hmac.new((token or keys.twilio_token).encode(), text.encode(), hashlib.sha1).digest()
    return Call(
        path,
        urlencode(params).encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": base64.b64encode(mac).decode(),
        },
    )


def sns(keys: Keys, message: dict[str, Any], *, version: str = "1", tenant: str = TENANT) -> Call:
    """An SNS HTTP(S) message signed as AWS documents: the fields' "Name\\nValue\\n" in order."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = keys.sns.sign(text.encode(), padding.PKCS1v15(), algorithm)
    signed = {
        **message,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
    }
    return Call(
        f"/v1/ses/{tenant}",
        json.dumps(signed).encode(),
        {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": message["Type"]},
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ses_notification(
    keys: Keys, event_type: str, name: str, offset_s: int, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An SES event-publishing record (mail + the event's own object) inside an SNS Notification."""
    at = datetime.fromtimestamp(T0 + offset_s, UTC).isoformat(timespec="milliseconds")
    key = {
        "Delivery": "delivery",
        "Bounce": "bounce",
        "Open": "open",
        "Click": "click",
        "Complaint": "complaint",
        "DeliveryDelay": "deliveryDelay",
    }.get(event_type)
    event: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "timestamp": datetime.fromtimestamp(T0, UTC).isoformat(timespec="milliseconds"),
            "source": "shop@example.com",
            "messageId": f"0100-{name}",
            "destination": ["lan@example.com"],
            "tags": {
                "leo_tenant_id": [TENANT],
                "leo_delivery_id": [delivery(name)],
                "ses:configuration-set": ["leo"],
            },
        },
    }
    if key:
        event[key] = {"timestamp": at, **(detail or {})}
    return {
        "Type": "Notification",
        "MessageId": f"sns-{name}-{event_type}",
        "TopicArn": keys.topic_arn,
        "Message": json.dumps(event),
        "Timestamp": now_iso(),
    }


def mailgun(
    keys: Keys, event: dict[str, Any], *, signed_at: int | None = None, tenant: str = TENANT
) -> Call:
    timestamp, token = str(signed_at or int(time.time())), uuid.uuid4().hex
    mac = hmac.new(keys.mailgun_key.encode(), (timestamp + token).encode(), hashlib.sha256)
    body = {
        "signature": {"timestamp": timestamp, "token": token, "signature": mac.hexdigest()},
        "event-data": event,
    }
    return Call(
        f"/v1/mailgun/{tenant}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )


def mailgun_event(event: str, name: str, offset_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "timestamp": T0 + offset_s,
        "id": f"mg-{name}-{event}",
        "recipient": "lan@example.com",
        "message": {"headers": {"message-id": f"{name}@mg.example.com"}},
        "user-variables": {"leo_tenant_id": TENANT, "leo_delivery_id": delivery(name)},
        **extra,
    }


def postmark(
    keys: Keys, event: dict[str, Any], *, password: str | None = None, tenant: str = TENANT
) -> Call:
    credentials = f"{keys.postmark_user}:{password or keys.postmark_password}".encode()
    return Call(
        f"/v1/postmark/{tenant}",
        json.dumps(event).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
        },
    )


def postmark_event(record_type: str, name: str, offset_s: int, **extra: Any) -> dict[str, Any]:
    at = datetime.fromtimestamp(T0 + offset_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    time_field = {
        "Delivery": "DeliveredAt",
        "Bounce": "BouncedAt",
        "Open": "ReceivedAt",
        "Click": "ReceivedAt",
        "SpamComplaint": "BouncedAt",
    }[record_type]
    return {
        "RecordType": record_type,
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": f"883953f4-{name}",
        "Recipient": "lan@example.com",
        "Tag": "tet",
        time_field: at,
        "Metadata": {"leo_tenant_id": TENANT, "leo_delivery_id": delivery(name)},
        **extra,
    }


def zalo(
    keys: Keys, event: dict[str, Any], *, tenant: str = TENANT, secret: str | None = None
) -> Call:
    body = json.dumps(event).encode()
    text = keys.zalo_app_id.encode() + body + str(event["timestamp"]).encode()
    mac = hashlib.sha256(text + (secret or keys.zalo_secret).encode()).hexdigest()
    return Call(
        f"/v1/zalo/{tenant}",
        body,
        {"Content-Type": "application/json", "X-ZEvent-Signature": f"mac={mac}"},
    )


def zalo_event(
    event_name: str, name: str, offset_s: int, *, signed_ms: int | None = None
) -> dict[str, Any]:
    return {
        "app_id": "1234567890",
        "user_id_by_app": "552177279717587730",
        "event_name": event_name,
        "sender": {"id": "579745863508352884"},
        "recipient": {"id": "84901234567"},
        "message": {
            "msg_id": f"zns-{name}",
            "tracking_id": delivery(name),
            "delivery_time": str((T0 + offset_s) * 1000),
        },
        "timestamp": str(signed_ms or int(time.time() * 1000)),
    }


# ------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    client: httpx.Client

    def post(self, call: Call) -> httpx.Response:
        return self.client.post(self.url + call.path, content=call.body, headers=call.headers)


@contextlib.contextmanager
def run_gateway(
    settings: Settings, config: str, tmp: Path, *, bootstrap: str | None = None, ready: bool = True
) -> Iterator[Gateway]:
    path = tmp / f"gateway-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(config, encoding="utf-8")
    port = free_port()
    env = {**os.environ, "TEST_MAILGUN_KEY": Keys.mailgun_key}
    # the child keeps its own copy of the descriptor: ours is closed at once (an open one would
    # surface as an unclosed-file warning in whichever test the collector happens to run in)
    with (tmp / f"gateway-{port}.log").open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "leo_activation",
                "--bootstrap",
                bootstrap or str(settings.kafka_bootstrap),
                "--topic-prefix",
                settings.topic_prefix,
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--config",
                str(path),
                "--log-format",
                "text",
            ],
            cwd=REPO,
            env=env,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp / f"gateway-{port}.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                probe = client.get(url + ("/readyz" if ready else "/healthz"))
                if probe.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the gateway did not get ready"
            time.sleep(0.2)
        yield Gateway(url, process, client)
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    log = (tmp / f"gateway-{port}.log").read_text()
    # uvicorn finishes what is in flight, then re-raises the SIGTERM it caught
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log
    for secret in (Keys.twilio_token, Keys.mailgun_key, Keys.postmark_password, Keys.zalo_secret):
        assert secret not in log


KEYS = make_keys()


def register(settings: Settings, *tenants: str) -> None:
    publish(
        settings,
        "commands",
        [
            from_json(
                "commands",
                {
                    "type": "tenant_register",
                    "tenant_id": t,
                    "tenant_name": t[:8],
                    "occurred_at": "2026-01-01T00:00:00Z",
                },
            )
            for t in tenants
        ],
    )


def rows(settings: Settings, tenant: str = TENANT) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, tenant):
        return conn.execute(
            "SELECT provider, delivery_id::text, delivery_status, channel, provider_message_id,"
            " sent_at FROM delivery_log ORDER BY provider, delivery_id, sent_at, delivery_status"
        ).fetchall()


def current(settings: Settings, name: str) -> str:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, TENANT):
        row = conn.execute(
            "SELECT current_status FROM delivery_status_current WHERE delivery_id = %s",
            (delivery(name),),
        ).fetchone()
    assert row is not None
    return str(row[0])


def failures(settings: Settings) -> dict[str, bool]:
    """had_failure of the SendGrid deferral and drop: a deferral is not a failure."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, TENANT):
        found = conn.execute(
            "SELECT delivery_id::text, had_failure FROM delivery_status_current"
            " WHERE delivery_id = ANY(%s::uuid[])",
            ([delivery("sg-d"), delivery("sg-x")],),
        ).fetchall()
    return dict(found)


def receipts(settings: Settings) -> list[dict[str, Any]]:
    codec = make_codec(None)
    return [codec.decode("receipts", m.value())[1] for m in read_topic(settings, "receipts")]


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    register(settings, TENANT, OTHER)
    config = config_text(KEYS, [TENANT, OTHER], max_body_bytes=1_000_000)
    with run_gateway(settings, config, tmp_path) as g:
        yield g


# ------------------------------------------------------------------ every provider, end to end
def every_provider_calls(g: Gateway) -> list[Call]:
    k = KEYS
    return [
        sendgrid(
            k,
            [
                sendgrid_event("processed", "sg", 0),
                sendgrid_event("delivered", "sg", 5),
                sendgrid_event("open", "sg", 60, useragent="Mozilla/5.0"),
                sendgrid_event("deferred", "sg-d", 1, response="400 try again later"),
                sendgrid_event("dropped", "sg-x", 1, reason="Bounced Address"),
                sendgrid_event("group_unsubscribe", "sg-u", 90, asm_group_id=1),
            ],
        ),
        twilio(k, g.url, "sent", "tw"),
        twilio(k, g.url, "delivered", "tw"),
        twilio(k, g.url, "read", "tw"),
        twilio(k, g.url, "undelivered", "tw-u"),
        sns(k, ses_notification(k, "Delivery", "ses", 3, {"smtpResponse": "250 ok"})),
        sns(k, ses_notification(k, "Bounce", "ses", 300, {"bounceType": "Permanent"}), version="2"),
        sns(k, ses_notification(k, "DeliveryDelay", "ses-d", 30, {"delayType": "MailboxFull"})),
        sns(k, ses_notification(k, "Complaint", "ses-c", 30, {"complaintFeedbackType": "abuse"})),
        mailgun(k, mailgun_event("delivered", "mg", 2.5)),
        mailgun(k, mailgun_event("failed", "mg-t", 2, severity="temporary", reason="generic")),
        mailgun(k, mailgun_event("clicked", "mg", 120, url="https://example.com/tet")),
        postmark(k, postmark_event("Delivery", "pm", 4, Details="smtp;250 2.0.0 OK")),
        postmark(k, postmark_event("Bounce", "pm-b", 4, Type="HardBounce", TypeCode=1)),
        postmark(k, postmark_event("SpamComplaint", "pm-c", 400, Type="SpamComplaint")),
        zalo(k, zalo_event("user_received_message", "zl", 7)),
        zalo(k, zalo_event("user_seen_message", "zl", 70)),
    ]


def test_every_provider_lands_in_delivery_log_and_trace(
    gateway: Gateway, settings: Settings
) -> None:
    for call in every_provider_calls(gateway):
        answer = gateway.post(call)
        assert answer.status_code == 200, answer.text
        # 2xx only after Kafka acknowledged: the receipts are already readable
        assert answer.json()["dead_letters"] == 0
    produced = receipts(settings)
    assert len(produced) == 22
    drain(settings)
    statuses = {(p, d, s) for p, d, s, *_ in rows(settings)}
    assert statuses == {
        ("sendgrid", delivery("sg"), "sent"),
        ("sendgrid", delivery("sg"), "delivered"),
        ("sendgrid", delivery("sg"), "opened"),
        ("sendgrid", delivery("sg-d"), "deferred"),
        ("sendgrid", delivery("sg-x"), "dropped"),
        ("sendgrid", delivery("sg-u"), "unsubscribed"),
        ("twilio", delivery("tw"), "sent"),
        ("twilio", delivery("tw"), "delivered"),
        ("twilio", delivery("tw"), "read"),
        ("twilio", delivery("tw-u"), "failed"),
        ("ses", delivery("ses"), "delivered"),
        ("ses", delivery("ses"), "bounced"),
        ("ses", delivery("ses-d"), "deferred"),
        ("ses", delivery("ses-c"), "complained"),
        ("mailgun", delivery("mg"), "delivered"),
        ("mailgun", delivery("mg"), "clicked"),
        ("mailgun", delivery("mg-t"), "deferred"),
        ("postmark", delivery("pm"), "delivered"),
        ("postmark", delivery("pm-b"), "bounced"),
        ("postmark", delivery("pm-c"), "complained"),
        ("zalo", delivery("zl"), "delivered"),
        ("zalo", delivery("zl"), "read"),
    }
    # times are the provider's: SendGrid's open at T0 + 60 s, Twilio's read one step after sent
    by_status = {(p, s): at for p, d, s, _, _, at in rows(settings)}
    assert by_status["sendgrid", "opened"] == datetime.fromtimestamp(T0 + 60, UTC)
    assert by_status["mailgun", "delivered"] == datetime.fromtimestamp(T0 + 2.5, UTC)
    assert by_status["twilio", "read"] - by_status["twilio", "sent"] == timedelta(microseconds=2)
    assert current(settings, "tw") == "read"
    assert current(settings, "ses") == "bounced"  # the bounce came later than the delivery
    assert current(settings, "sg-x") == "dropped"
    assert current(settings, "sg-d") == "deferred"
    assert failures(settings) == {delivery("sg-d"): False, delivery("sg-x"): True}
    # provider_response keeps the provider's own event, less the recipient's address: no receipt
    # names one (an erasure could not reach it in the receipts topic, kept for ever)
    for r in produced:
        assert r["destination"] is None
        assert "lan@example.com" not in r["provider_response"]
        assert "84901234567" not in r["provider_response"]
    by_provider = {r["provider"]: json.loads(r["provider_response"]) for r in produced}
    assert by_provider["postmark"]["MessageStream"] == "outbound"
    assert by_provider["twilio"]["AccountSid"].startswith("AC")
    doc = read_trace(settings, uuid.UUID(TENANT), "delivery", uuid.UUID(delivery("ses")))
    assert doc is not None
    text = render_delivery(doc)
    assert "bounced" in text
    assert "delivered" in text


def test_an_sns_subscription_confirmation_is_verified_and_produces_nothing(
    gateway: Gateway, settings: Settings
) -> None:
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "sns-confirm",
        "Token": "2336412f37f",
        "TopicArn": KEYS.topic_arn,
        "Message": "You have chosen to subscribe to the topic...",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        "Timestamp": now_iso(),
    }
    assert gateway.post(sns(KEYS, confirmation)).status_code == 200
    forged = sns(KEYS, confirmation)
    tampered = json.loads(forged.body) | {"SubscribeURL": "https://attacker.example.com/"}
    assert (
        gateway.post(Call(forged.path, json.dumps(tampered).encode(), forged.headers)).status_code
        == 401
    )
    assert receipts(settings) == []


# ------------------------------------------------------------------ refusals produce nothing
def test_every_refusal_is_answered_and_produces_nothing(
    gateway: Gateway, settings: Settings
) -> None:
    k, g = KEYS, gateway
    good_sg = sendgrid(k, [sendgrid_event("delivered", "r", 0)])
    stale = int(time.time()) - 3600
    bad_signature = {
        **good_sg.headers,
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
            k.sendgrid.sign(b"something else", ec.ECDSA(hashes.SHA256()))
        ).decode(),
    }
    no_signature = {"Content-Type": "application/json"}
    twilio_call = twilio(k, g.url, "delivered", "r")
    tampered_twilio = Call(
        twilio_call.path.replace(delivery("r"), delivery("x")),
        twilio_call.body,
        twilio_call.headers,
    )
    sns_call = sns(k, ses_notification(k, "Delivery", "r", 0))
    sns_doc = json.loads(sns_call.body)
    old_sns = sns(
        k, {**ses_notification(k, "Delivery", "r", 0), "Timestamp": "2020-01-01T00:00:00.000Z"}
    )
    zalo_call = zalo(k, zalo_event("user_received_message", "r", 0))
    cases: list[tuple[str, Call, int]] = [
        ("sendgrid bad signature", Call(good_sg.path, good_sg.body, bad_signature), 401),
        ("sendgrid no signature", Call(good_sg.path, good_sg.body, no_signature), 401),
        (
            "sendgrid stale",
            sendgrid(k, [sendgrid_event("delivered", "r", 0)], signed_at=stale),
            401,
        ),
        (
            "sendgrid body changed",
            Call(good_sg.path, good_sg.body.replace(b"delivered", b"open"), good_sg.headers),
            401,
        ),
        ("twilio wrong token", twilio(k, g.url, "delivered", "r", token="nope"), 401),
        ("twilio url changed", tampered_twilio, 401),
        ("twilio no signature", Call(twilio_call.path, twilio_call.body, no_signature), 401),
        (
            "sns bad signature",
            Call(sns_call.path, json.dumps(sns_doc | {"Message": "{}"}).encode(), sns_call.headers),
            401,
        ),
        ("sns stale", old_sns, 401),
        (
            "sns untrusted topic",
            sns(
                k,
                ses_notification(k, "Delivery", "r", 0)
                | {"TopicArn": "arn:aws:sns:us-east-1:1:evil"},
            ),
            401,
        ),
        (
            "mailgun bad key",
            Call(
                f"/v1/mailgun/{TENANT}",
                mailgun(k, mailgun_event("delivered", "r", 0)).body.replace(
                    b'"signature": "', b'"signature": "0'
                ),
                {},
            ),
            401,
        ),
        ("mailgun stale", mailgun(k, mailgun_event("delivered", "r", 0), signed_at=stale), 401),
        (
            "postmark bad password",
            postmark(k, postmark_event("Delivery", "r", 0), password="guess"),
            401,
        ),
        ("postmark no auth", Call(f"/v1/postmark/{TENANT}", b"{}", no_signature), 401),
        (
            "zalo bad mac",
            Call(zalo_call.path, zalo_call.body, {"X-ZEvent-Signature": "mac=00"}),
            401,
        ),
        (
            "zalo stale",
            zalo(k, zalo_event("user_received_message", "r", 0, signed_ms=stale * 1000)),
            401,
        ),
        # a tenant's key cannot post for another: the other tenant's URL checks the other's key
        (
            "sendgrid other tenant's url",
            sendgrid(k, [sendgrid_event("delivered", "r", 0)], tenant=OTHER),
            401,
        ),
        ("twilio other tenant's url", twilio(k, g.url, "delivered", "r", tenant=OTHER), 401),
        (
            "zalo other tenant's url",
            zalo(k, zalo_event("user_received_message", "r", 0), tenant=OTHER),
            401,
        ),
        # ... nor name another tenant in an event it signs
        (
            "sendgrid names another tenant",
            sendgrid(k, [sendgrid_event("delivered", "r", 0, leo_tenant_id=OTHER)]),
            403,
        ),
        (
            "ses names another tenant",
            sns(
                k,
                json.loads(
                    json.dumps(ses_notification(k, "Delivery", "r", 0)).replace(TENANT, OTHER)
                ),
            ),
            403,
        ),
        ("unconfigured tenant", sendgrid(k, [], tenant=str(uuid.uuid4())), 401),
        ("unknown provider", Call(f"/v1/sparkpost/{TENANT}", b"[]", {}), 404),
        ("malformed json", sendgrid_signed_raw(b"[{not json"), 400),
        ("sendgrid not an array", sendgrid_signed_raw(b'{"event": "delivered"}'), 400),
        ("twilio no MessageSid", twilio_signed_form(g, {"MessageStatus": "sent"}), 400),
        ("sns not json", Call(f"/v1/ses/{TENANT}", b"hello", {}), 400),
        ("too large", sendgrid_signed_raw(b"[" + b" " * 2_000_000 + b"]"), 413),
    ]
    for what, call, status in cases:
        answer = g.post(call)
        assert answer.status_code == status, (what, answer.text)
        reason = answer.json()["error"]
        assert reason, what
        assert "\n" not in reason, what
        assert k.twilio_token not in reason
        assert k.postmark_password not in reason
    assert receipts(settings) == []
    assert read_topic(settings, "dead-letters") == []
    metrics = g.client.get(g.url + "/metrics").text
    assert 'leo_gateway_requests_total{code="401",provider="sendgrid"}' in metrics


def sendgrid_signed_raw(body: bytes) -> Call:
    timestamp = str(int(time.time()))
    signature = KEYS.sendgrid.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return Call(
        f"/v1/sendgrid/{TENANT}",
        body,
        {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )


def twilio_signed_form(g: Gateway, params: dict[str, str]) -> Call:
    path = f"/v1/twilio/{TENANT}"
    text = g.url + path + "".join(k + params[k] for k in sorted(params))
    mac = hmac.new(KEYS.twilio_token.encode(), text.encode(), hashlib.sha1).digest()
    return Call(
        path,
        urlencode(params).encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": base64.b64encode(mac).decode(),
        },
    )


# ------------------------------------------------------------------ retries and order
def test_retries_and_reverse_order_give_the_same_digest(
    gateway: Gateway, settings: Settings, stack: Endpoints, db_template: str
) -> None:
    calls = every_provider_calls(gateway)
    for call in calls:
        assert gateway.post(call).status_code == 200
    drain(settings)
    once = state_digest(settings, uuid.UUID(TENANT))[0]
    # the providers retry everything three times, newest first. SendGrid and Mailgun sign each
    # attempt at its own time; SNS and Zalo send the very same message again
    for _ in range(3):
        again = [
            first if first.path.startswith(("/v1/ses/", "/v1/zalo/")) else fresh
            for first, fresh in zip(calls, every_provider_calls(gateway), strict=True)
        ]
        for call in reversed(again):
            assert gateway.post(call).status_code == 200
    drain(settings)
    assert state_digest(settings, uuid.UUID(TENANT))[0] == once
    # a second database built from the whole topic, duplicates and all, agrees
    with fresh_database(stack, db_template) as other:
        rebuilt = deployment_settings(stack, other, settings.topic_prefix)
        drain(rebuilt)
        assert state_digest(rebuilt, uuid.UUID(TENANT))[0] == once


# ------------------------------------------------------------------ unmappable -> dead letters
def test_signed_events_that_cannot_be_mapped_are_dead_lettered_with_a_reason(
    gateway: Gateway, settings: Settings
) -> None:
    no_delivery = sendgrid_event("delivered", "dl", 0)
    del no_delivery["leo_delivery_id"]
    unknown = sendgrid_event("group_resubscribe", "dl", 1)
    answer = gateway.post(sendgrid(KEYS, [no_delivery, unknown, sendgrid_event("open", "dl", 2)]))
    assert answer.status_code == 200
    assert answer.json() == {"receipts": 1, "dead_letters": 2}
    assert gateway.post(zalo(KEYS, zalo_event("follow", "dl", 3))).status_code == 200
    letters = list_dead_letters(settings)
    assert [(d.error_class, d.original_topic, d.tenant_id) for d in letters] == [
        ("no_delivery_id", "gateway/sendgrid", TENANT),
        ("unknown_status", "gateway/sendgrid", TENANT),
        ("unknown_status", "gateway/zalo", TENANT),
    ]
    assert "group_resubscribe" in letters[1].reason
    codec = make_codec(None)
    raw = [codec.decode("dead-letters", m.value())[1] for m in read_topic(settings, "dead-letters")]
    # the event as the provider sent it, less the recipient's address (an erasure could not
    # reach it in the dead-letter topic)
    assert json.loads(raw[0]["original_value"]) == without_addresses(no_delivery)
    assert "email" in no_delivery
    assert [r["status"] for r in receipts(settings)] == ["opened"]
    metrics = gateway.client.get(gateway.url + "/metrics").text
    assert 'leo_gateway_events_total{outcome="dead_lettered",provider="sendgrid"} 2.0' in metrics
    assert 'leo_gateway_events_total{outcome="produced",provider="sendgrid"} 1.0' in metrics


# ------------------------------------------------------------------ Kafka away
def test_kafka_unreachable_gives_503_and_not_ready(settings: Settings, tmp_path: Path) -> None:
    config = config_text(KEYS, [TENANT], ack_timeout_s=2)
    closed = f"127.0.0.1:{free_port()}"
    with run_gateway(settings, config, tmp_path, bootstrap=closed, ready=False) as g:
        assert g.client.get(g.url + "/healthz").status_code == 200
        assert g.client.get(g.url + "/readyz").status_code == 503
        answer = g.post(sendgrid(KEYS, [sendgrid_event("delivered", "k", 0)]))
        assert answer.status_code == 503
        assert "retry" in answer.json()["error"]
        metrics = g.client.get(g.url + "/metrics").text
        assert 'leo_gateway_requests_total{code="503",provider="sendgrid"} 1.0' in metrics


@pytest.mark.faults
def test_kafka_stopped_gives_503_and_the_retry_after_it_is_back_lands_once(
    settings: Settings, tmp_path: Path, local_stack_home: Path
) -> None:
    from leo_activation.dev import stack as devstack

    register(settings, TENANT)
    config = config_text(KEYS, [TENANT], ack_timeout_s=3)
    with run_gateway(settings, config, tmp_path) as g:
        call = twilio(KEYS, g.url, "delivered", "restart")
        devstack.stop_kafka(local_stack_home)
        try:
            assert g.post(call).status_code == 503
            assert g.client.get(g.url + "/readyz").status_code == 503
        finally:
            devstack.start_kafka(local_stack_home)
        deadline = time.monotonic() + 120
        while g.client.get(g.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not see Kafka come back"
            time.sleep(0.5)
        # Twilio retries the very same request
        answer = g.post(call)
        assert answer.status_code == 200, answer.text
    drain(settings)
    assert [(p, s) for p, _, s, *_ in rows(settings)] == [("twilio", "delivered")]


def test_sigterm_finishes_the_request_in_flight(settings: Settings, tmp_path: Path) -> None:
    register(settings, TENANT)
    call = sendgrid(KEYS, [sendgrid_event("delivered", f"term{i}", i) for i in range(200)])

    def slowly() -> Iterator[bytes]:  # the body arrives over ~1.5 s
        for start in range(0, len(call.body), len(call.body) // 6 + 1):
            yield call.body[start : start + len(call.body) // 6 + 1]
            time.sleep(0.25)

    with run_gateway(settings, config_text(KEYS, [TENANT]), tmp_path) as g:
        answers: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                g.client.post(g.url + call.path, content=slowly(), headers=call.headers)
            )
        )
        sender.start()
        time.sleep(0.5)
        g.process.send_signal(signal.SIGTERM)
        sender.join(30)
    assert [a.status_code for a in answers] == [200]
    assert len(receipts(settings)) == 200
