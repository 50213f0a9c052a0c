"""The webhook gateway's section: events/s through HTTP into Kafka, and request latency.

The gateway (``leo-activation gateway``) and the receipts consumer run as their own processes;
the load comes from a third (``python -m bench.gateway load``), which signs every request before
the clock starts (signing is the provider's work) and then sends them over keep-alive
connections from a few threads. A request counts when it is answered 200, which the gateway does
only once Kafka acknowledged all its receipts; the consumer's catching up is reported beside it.

Two shapes: SendGrid-style batches of 500 events per request, and Twilio-style single events.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import gen
from bench.env import BenchEnv

REPO = Path(__file__).resolve().parent.parent
TWILIO_TOKEN = "bench-twilio-token"
SENDGRID_BATCH = 500
T0 = 1_767_312_000


# ---------------------------------------------------------------------- signed requests
def _key_from(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def sendgrid_requests(
    pem: str, tenant: str, events: int, seed: int
) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    key = _key_from(pem)
    for start in range(0, events, SENDGRID_BATCH):
        batch = [
            {"email": f"user{i}@example.com", "timestamp": T0 + i, "event": "delivered",
             "sg_event_id": f"sg-{seed}-{i}", "sg_message_id": f"m-{seed}-{i}.0",
             "smtp-id": f"<{seed}.{i}@ismtpd>", "leo_tenant_id": tenant,
             "leo_delivery_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}:{i}"))}
            for i in range(start, min(start + SENDGRID_BATCH, events))
        ]  # fmt: skip
        body = json.dumps(batch).encode()
        timestamp = str(int(time.time()))
        signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        yield (
            f"/v1/sendgrid/{tenant}",
            body,
            {
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            },
        )


def twilio_requests(
    base_url: str, tenant: str, events: int, seed: int
) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    for i in range(events):
        delivery = uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}:tw:{i}")
        path = f"/v1/twilio/{tenant}?" + urlencode(
            {"leo_delivery_id": str(delivery), "leo_sent_at": (T0 + i) * 1_000_000}
        )
        params = {"MessageSid": f"SM{i:032d}", "MessageStatus": "delivered",
                  "AccountSid": "AC" + "0" * 32, "To": "+84901234567",
                  "From": "+15017122661"}  # fmt: skip
        text = base_url + path + "".join(k + params[k] for k in sorted(params))
        mac = hmac.new(TWILIO_TOKEN.encode(), text.encode(), hashlib.sha1).digest()
        yield (
            path,
            urlencode(params).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": base64.b64encode(mac).decode(),
            },
        )


# ---------------------------------------------------------------------- the load process
def load(args: argparse.Namespace) -> None:
    """Runs in its own process; prints one JSON line: events, seconds, latencies."""
    if args.shape == "sendgrid":
        requests = list(sendgrid_requests(Path(args.key).read_text(), args.tenant, args.events,
                                          args.seed))  # fmt: skip
        per_request = SENDGRID_BATCH
    else:
        requests = list(twilio_requests(args.url, args.tenant, args.events, args.seed))
        per_request = 1
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    cursor = iter(requests)

    def worker() -> None:
        with httpx.Client(base_url=args.url, timeout=120) as client:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                path, body, headers = item
                started = time.perf_counter()
                answer = client.post(path, content=body, headers=headers)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if answer.status_code != 200:
                        failures.append(answer.status_code)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    print(json.dumps({
        "events": min(args.events, len(requests) * per_request),
        "requests": len(requests),
        "seconds": seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "failures": failures[:5],
    }))  # fmt: skip


# ---------------------------------------------------------------------- the section
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, cwd=REPO, env=env, stderr=log.open("wb"))
    try:
        yield process
    finally:
        process.terminate()
        process.wait(60)


def _delivery_rows(admin_url: str) -> int:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM delivery_log").fetchone()
        return int(row[0]) if row else 0


def bench_gateway(env: BenchEnv, report: Any, _sizes: dict[str, Any]) -> None:
    # sizes: LEO_BENCH_GATEWAY_BATCHED / _SINGLE events (the other sections' sizes do not apply)
    batched = int(os.environ.get("LEO_BENCH_GATEWAY_BATCHED", "100000"))
    single = int(os.environ.get("LEO_BENCH_GATEWAY_SINGLE", "10000"))
    tenant = gen.bench_tenants(3, 1)[0]
    database = env.fresh_database("gw")
    env.add_tenants(database, [tenant])
    prefix = env.prefix("gw")
    settings = env.settings(database, prefix, "gw")
    work = Path(tempfile.mkdtemp(prefix="leo-bench-gw-"))
    signing = ec.generate_private_key(ec.SECP256R1())
    key_file = work / "sendgrid.pem"
    key_file.write_bytes(signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    public = signing.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = work / "gateway.toml"
    config.write_text(
        f'[gateway]\nmax_body_bytes = 10000000\n[tenants."{tenant}".sendgrid]\n'
        f'public_key = "{base64.b64encode(public).decode()}"\n'
        f'[tenants."{tenant}".twilio]\nauth_token = "{TWILIO_TOKEN}"\n'
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    child_env = {**os.environ, "LEO_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
                 "LEO_DATABASE_URL": database.app_url, "LEO_TOPIC_PREFIX": prefix,
                 "LEO_GROUP_ID": settings.group_id,
                 "LEO_TOPIC_REPLICATION_FACTOR": str(settings.topic_replication_factor),
                 "LEO_TOPIC_MIN_INSYNC_REPLICAS": str(settings.topic_min_insync_replicas),
                 }  # fmt: skip
    leo = [sys.executable, "-m", "leo_activation"]
    gateway_argv = [*leo, "gateway", "--host", "127.0.0.1", "--port", str(port),
                    "--config", str(config)]  # fmt: skip
    with (
        _process(gateway_argv, work / "gateway.log", child_env),
        _process([*leo, "consume", "--topics", "receipts"], work / "consume.log", child_env),
    ):
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            assert time.monotonic() < deadline, (work / "gateway.log").read_text()
            time.sleep(0.2)
        expected = 0
        for shape, events, concurrency in (("sendgrid", batched, 4), ("twilio", single, 16)):
            argv = [sys.executable, "-m", "bench.gateway", "load", "--url", url,
                    "--tenant", str(tenant), "--shape", shape, "--events", str(events),
                    "--concurrency", str(concurrency), "--key", str(key_file),
                    "--seed", str(len(shape))]  # fmt: skip
            done = subprocess.run(argv, cwd=REPO, capture_output=True, check=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            assert not result["failures"], result
            expected += result["events"]
            rate = result["events"] / result["seconds"]
            what = "batches of 500" if shape == "sendgrid" else "one event per request"
            report.add("gateway", f"{shape}, {what}: HTTP -> Kafka acked",
                       f"{rate:,.0f} events/s", f"{result['events']:,} events, "
                       f"{concurrency} connections")  # fmt: skip
            report.add("gateway", f"{shape}: request latency p50 / p99",
                       f"{result['p50_ms']:.1f} / {result['p99_ms']:.1f} ms")  # fmt: skip
            report.facts[f"gateway_{shape}"] = {**result, "events_per_s": rate}
            if shape == "sendgrid":
                target = "OK" if rate >= 10_000 else "BELOW TARGET"
                report.add("gateway", "batched target >= 10,000 events/s", target)
        started = time.monotonic()
        while _delivery_rows(database.admin_url) < expected:
            assert time.monotonic() - started < 300, "the consumer did not catch up"
            time.sleep(0.5)
        report.add("gateway", "receipts consumer caught up after the load",
                   f"{time.monotonic() - started:.1f} s", f"{expected:,} rows")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gateway")
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("load", help="the load generator (run by the bench section)")
    lp.add_argument("--url", required=True)
    lp.add_argument("--tenant", required=True)
    lp.add_argument("--shape", choices=("sendgrid", "twilio"), required=True)
    lp.add_argument("--events", type=int, required=True)
    lp.add_argument("--concurrency", type=int, default=4)
    lp.add_argument("--key", help="SendGrid signing key (PEM)")
    lp.add_argument("--seed", type=int, default=1)
    load(p.parse_args(argv))


if __name__ == "__main__":
    main()
