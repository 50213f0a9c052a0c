"""Secured clients, durable topics and a start-up that waits for the cluster.

The whole operator story (publish, consume, digest, replay, dead letters, verify) runs as CLI
processes through a SASL_SSL listener (SCRAM-SHA-512, a CA made by the fixture), configured the
three ways an operator can (named variables, a properties file, ``LEO_KAFKA__*``), and nothing any
of them printed holds the password.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource, ConfigSource
from confluent_kafka.schema_registry.error import SchemaRegistryError

from leo_activation.codec import REGISTRY_MAGIC, make_codec
from leo_activation.contracts import from_json
from leo_activation.dev import corpus
from leo_activation.dev import stack as devstack
from leo_activation.errors import LeoError
from leo_activation.kafka import connection_config, ensure_topics
from leo_activation.settings import TOPIC_SUFFIXES, Settings, from_env
from tests.fix_db import DbUrls
from tests.fix_security import SecureKafka, _certificates

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Cli:
    """Runs ``leo-activation`` as a process with a LEO_* environment; keeps all it printed."""

    env: dict[str, str]
    printed: list[str] = field(default_factory=list)

    def run(
        self, *args: str, extra: dict[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("LEO_")}
        result = subprocess.run(
            [sys.executable, "-m", "leo_activation", *args],
            env={**base, **self.env, **(extra or {})},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.printed += [result.stdout, result.stderr]
        return result

    def ok(self, *args: str, extra: dict[str, str] | None = None) -> str:
        result = self.run(*args, extra=extra)
        assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}"
        return result.stdout


def _jsonl(path: Path, messages: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
    return path


def _app_env(secure: SecureKafka, db: DbUrls, password: str | None = None) -> dict[str, str]:
    return {
        **secure.env(password),
        "LEO_DATABASE_URL": db.app_url,
        "LEO_ADMIN_DATABASE_URL": db.admin_url,
        "LEO_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:8]}.",
        "LEO_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
    }


# ---------------------------------------------------------------------- SASL_SSL, end to end
@pytest.mark.slow
def test_the_whole_story_runs_through_a_sasl_ssl_listener_and_never_prints_the_password(
    secure_kafka: SecureKafka, db: DbUrls, tmp_path: Path
) -> None:
    cli = Cli(_app_env(secure_kafka, db))
    group = cli.env["LEO_GROUP_ID"]
    c = corpus.build(71, n_tenants=2, n_profiles=10, n_receipts=25)
    stranger = {**c.topics["receipts"][0], "tenant_id": str(uuid.uuid4())}  # -> a dead letter

    # named variables (LEO_KAFKA_SASL_* ...)
    commands = _jsonl(tmp_path / "commands.jsonl", c.topics["commands"])
    cli.ok("publish", "--topic", "commands", str(commands))
    # every log line there is, librdkafka's dump of each client's configuration included
    debug = {"LEO_LOG_LEVEL": "DEBUG", "LEO_KAFKA__DEBUG": "conf"}
    cli.ok("consume", "--until-idle", "2", extra=debug)
    assert "sasl.username" in cli.printed[-1], "no configuration dump to look for secrets in"
    for topic in ("profile-changes", "receipts"):
        extra = [stranger] if topic == "receipts" else []
        path = _jsonl(tmp_path / f"{topic}.jsonl", [*c.topics[topic], *extra])
        cli.ok("publish", "--topic", topic, str(path))
    cli.ok("consume", "--until-idle", "2")
    digest = cli.ok("digest").split()[0]

    # a properties file holding the security settings (LEO_KAFKA_CONFIG) instead
    properties = tmp_path / "client.properties"
    properties.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        f"sasl.username={secure_kafka.username}\nsasl.password={secure_kafka.password}\n"
        f"ssl.ca.location={secure_kafka.ca_location}\n",
        encoding="utf-8",
    )
    named = ("PROTOCOL", "MECHANISM", "USERNAME", "PASSWORD", "CA_LOCATION")
    cli.env = {k: v for k, v in cli.env.items() if not k.endswith(named)}
    cli.env["LEO_KAFKA_CONFIG"] = str(properties)
    letters = cli.ok("dead-letters", "list")
    assert "unknown_tenant" in letters
    cli.ok("replay", "--group", group, "--topic", "receipts", "--from-offset", "0")
    cli.ok("consume", "--until-idle", "2")
    assert cli.ok("digest").split()[0] == digest

    # LEO_KAFKA__<property> passthrough, overriding a wrong password in the file
    properties.write_text(
        properties.read_text().replace(secure_kafka.password, "not-the-password"), "utf-8"
    )
    cli.env["LEO_KAFKA__SASL_PASSWORD"] = secure_kafka.password
    assert f"state verified: {digest}" in cli.ok("verify", "--group", group, "--idle", "3")

    everything = "\n".join(cli.printed)
    assert everything.strip(), "the commands printed nothing at all"
    assert secure_kafka.password not in everything


def test_a_wrong_password_fails_in_seconds_with_one_line_naming_the_cause(
    secure_kafka: SecureKafka, db: DbUrls
) -> None:
    cli = Cli(_app_env(secure_kafka, db, password="wrong-" + uuid.uuid4().hex))
    started = time.monotonic()
    result = cli.run("consume", "--until-idle", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 20, f"took {elapsed:.1f}s: retried instead of failing"
    ours = [line for line in result.stderr.splitlines() if line.startswith("leo-activation:")]
    assert len(ours) == 1, result.stderr
    assert "Authentication failed" in ours[0]
    assert "Traceback" not in result.stderr
    assert cli.env["LEO_KAFKA_SASL_PASSWORD"] not in result.stdout + result.stderr


# ---------------------------------------------------------------------- start-up wait
def test_consume_started_before_the_broker_waits_for_it(
    secure_kafka: SecureKafka, db: DbUrls, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEO_")}
    env |= _app_env(secure_kafka, db)
    log = tmp_path / "consume.log"
    devstack.stop_kafka(secure_kafka.home)
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "leo_activation", "consume", "--until-idle", "2"],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "next try in" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "no retry logged"
                time.sleep(0.2)
            devstack.start_kafka(secure_kafka.home)
            assert proc.wait(120) == 0, log.read_text(errors="replace")[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    finally:
        devstack.start_kafka(secure_kafka.home)
    retries = [line for line in log.read_text().splitlines() if "next try in" in line]
    assert all("Kafka does not answer yet (attempt" in line for line in retries)


def test_a_broker_that_never_comes_is_one_line_and_exit_1_after_the_startup_timeout(
    db: DbUrls,
) -> None:
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    cli = Cli(
        {
            "LEO_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "LEO_DATABASE_URL": db.app_url,
            "LEO_KAFKA_STARTUP_TIMEOUT_S": "5",
        }
    )
    started = time.monotonic()
    result = cli.run("consume", "--until-idle", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert 5 <= elapsed < 20
    lines = result.stderr.splitlines()
    ours = [line for line in lines if line.startswith("leo-activation:")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(f"leo-activation: Kafka at 127.0.0.1:{port} did not answer")
    assert "within 5s (LEO_KAFKA_STARTUP_TIMEOUT_S)" in ours[0]
    attempts = [line for line in lines if "next try in" in line]
    assert len(attempts) >= 2
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------- topic durability
def test_topics_get_the_settings_durability_and_too_few_brokers_are_refused(
    settings: Settings, kafka_admin: AdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(LeoError) as refused:
        ensure_topics(settings.with_overrides(topic_replication_factor=3))
    message = str(refused.value)
    assert "\n" not in message
    assert "replication factor 3" in message
    assert "only 1 broker(s) live" in message

    ensure_topics(settings)
    topic = settings.topic("receipts")
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = kafka_admin.describe_configs([resource])[resource].result()
    min_isr = entries["min.insync.replicas"]
    assert min_isr.value == "1"
    assert min_isr.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value  # set, not inherited

    caplog.set_level(logging.WARNING, logger="leo_activation.kafka")
    ensure_topics(settings.with_overrides(topic_replication_factor=2, topic_min_insync_replicas=2))
    warned = [r.getMessage() for r in caplog.records if "below the settings" in r.getMessage()]
    assert len(warned) == len(TOPIC_SUFFIXES)  # one line per topic of the deployment
    assert any(f"topic {topic} has replication factor 1 and min.insync.replicas 1" in w
               for w in warned)  # fmt: skip


# ---------------------------------------------------------------------- configuration
def test_named_settings_override_passthrough_variables_which_override_the_properties_file(
    tmp_path: Path,
) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(
        "# a comment\nbootstrap.servers=file:9092\nsasl.mechanism=PLAIN\n"
        "sasl.username=from-file\nclient.id=from-file\nsocket.timeout.ms=1000\n",
        encoding="utf-8",
    )
    env = {
        "LEO_KAFKA_CONFIG": str(properties),
        "LEO_KAFKA__CLIENT_ID": "from-variable",
        "LEO_KAFKA__SASL_USERNAME": "from-variable",
        "LEO_KAFKA_SASL_USERNAME": "named",
        "LEO_KAFKA_SASL_PASSWORD": "pw-named",
        "LEO_KAFKA_BOOTSTRAP": "named:9092",
    }
    config = connection_config(from_env(env))
    assert config["bootstrap.servers"] == "named:9092"
    assert config["sasl.username"] == "named"
    assert config["client.id"] == "from-variable"
    assert config["socket.timeout.ms"] == "1000"
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["sasl.password"] == "pw-named"
    assert "pw-named" not in repr(from_env(env))


@pytest.mark.parametrize(
    ("variables", "reason"),
    [
        (
            {"LEO_KAFKA__NO_SUCH_PROPERTY": "x"},
            'No such configuration property: "no.such.property"',
        ),
        ({"LEO_KAFKA_CONFIG": "/nonexistent/client.properties"}, "/nonexistent/client.properties"),
    ],
)
def test_a_malformed_client_configuration_is_one_line_and_exit_2(
    variables: dict[str, str], reason: str
) -> None:
    result = Cli({"LEO_KAFKA_BOOTSTRAP": "127.0.0.1:9", **variables}).run(
        "replay", "--group", "g", "--topic", "receipts", "--from-offset", "0"
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("leo-activation: ")
    assert reason in result.stderr


# ---------------------------------------------------------------------- Schema Registry
class _Registry(BaseHTTPRequestHandler):
    """A registry answering one registration, to users it knows (over TLS)."""

    expected = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Authorization") != self.expected:
            body, status = {"error_code": 40101, "message": "Unauthorized"}, 401
        else:
            body, status = {"id": 7}, 200
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, keystore = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(keystore)
    _Registry.expected = "Basic " + base64.b64encode(b"sr-user:sr-pass-123").decode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()


def test_the_registry_client_authenticates_and_trusts_the_configured_ca(
    tls_registry: tuple[str, Path],
) -> None:
    url, ca = tls_registry
    kind, record = from_json("commands", corpus.build(3).topics["commands"][0])
    settings = Settings(
        schema_registry_url=url,
        schema_registry_username="sr-user",
        schema_registry_ca_location=str(ca),
    )
    good = from_env(
        {
            "LEO_SCHEMA_REGISTRY_URL": url,
            "LEO_SCHEMA_REGISTRY_USERNAME": "sr-user",
            "LEO_SCHEMA_REGISTRY_PASSWORD": "sr-pass-123",
            "LEO_SCHEMA_REGISTRY_CA_LOCATION": str(ca),
        }
    )
    data = make_codec(good).encode(kind, record)
    assert data[:5] == REGISTRY_MAGIC + (7).to_bytes(4, "big")

    with pytest.raises(SchemaRegistryError) as refused:  # no password: the registry says 401
        make_codec(settings).encode(kind, record)
    assert "Unauthorized" in str(refused.value)
    assert "sr-pass-123" not in str(refused.value)
