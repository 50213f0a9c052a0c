"""pytest plugin: the session's real Kafka and PostgreSQL, and per-test topic isolation.

Where the stack comes from, first match wins:
1. ``LEO_KAFKA_BOOTSTRAP`` and ``LEO_ADMIN_DATABASE_URL`` in the environment (an external stack);
2. testcontainers, when a Docker engine answers (``apache/kafka`` and ``pgvector/pgvector``);
3. the local stack in ``<repo>/.dev/test-stack``, stopped at session end if this session started it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from leo_activation.dev import stack as devstack
from leo_activation.dev.stack import Endpoints

REPO = Path(__file__).resolve().parent.parent
TEST_STACK_HOME = REPO / ".dev" / "test-stack"
KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "pgvector/pgvector:pg17"
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Stack:
    endpoints: Endpoints
    # The local stack's folder when the session runs on it; fault tests need it to restart servers.
    home: Path | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_url(admin_url: str) -> str:
    """The admin DSN with the application role `migrate` creates in place of the owner."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rpartition("@")[2]
    role = devstack.APP_ROLE
    return urlunsplit(parts._replace(netloc=f"{role}:{role}@{host}"))


def _wait_until(what: str, probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.5)
    raise TimeoutError(f"{what} was not ready within {READY_TIMEOUT_S:.0f}s")


def _kafka_answers(bootstrap: str) -> Callable[[], bool]:
    def probe() -> bool:
        return bool(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2).brokers)

    return probe


def _postgres_answers(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() is not None

    return probe


def _docker_answers() -> bool:
    try:
        # Imported here: only machines that may have Docker need the client loaded.
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no socket, no daemon, no permission: all mean "use the local stack"
        return False


@contextlib.contextmanager
def _containers() -> Iterator[Endpoints]:
    from testcontainers.core.container import DockerContainer

    kafka = DockerContainer(KAFKA_IMAGE)
    host = kafka.get_container_host_ip()
    port = _free_port()
    # The advertised address must be known before the broker starts, so the host port is fixed.
    kafka.with_bind_ports(9092, port)
    for key, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "3",
    }.items():
        kafka.with_env(key, value)
    postgres = (
        DockerContainer(POSTGRES_IMAGE)
        .with_env("POSTGRES_PASSWORD", "postgres")
        .with_env("POSTGRES_DB", devstack.DATABASE)
        .with_exposed_ports(5432)
    )
    with kafka, postgres:
        pg_host, pg_port = postgres.get_container_host_ip(), postgres.get_exposed_port(5432)
        admin_url = f"postgresql://postgres:postgres@{pg_host}:{pg_port}/{devstack.DATABASE}"
        bootstrap = f"{host}:{port}"
        _wait_until(f"Kafka container at {bootstrap}", _kafka_answers(bootstrap))
        _wait_until(f"PostgreSQL container at {pg_host}:{pg_port}", _postgres_answers(admin_url))
        yield Endpoints(bootstrap, app_url(admin_url), admin_url)


@pytest.fixture(scope="session")
def running_stack() -> Iterator[Stack]:
    bootstrap = os.environ.get("LEO_KAFKA_BOOTSTRAP")
    admin_url = os.environ.get("LEO_ADMIN_DATABASE_URL")
    if bootstrap and admin_url:
        app = os.environ.get("LEO_DATABASE_URL") or app_url(admin_url)
        yield Stack(Endpoints(bootstrap, app, admin_url), home=None)
        return
    if bootstrap and os.environ.get("LEO_DATABASE_URL"):
        pytest.fail(
            "LEO_KAFKA_BOOTSTRAP and LEO_DATABASE_URL are set but LEO_ADMIN_DATABASE_URL is not: "
            "set it too (the tests create databases), or unset both to use a local test stack"
        )
    if _docker_answers():
        with _containers() as endpoints:
            yield Stack(endpoints, home=None)
        return
    started_here = not devstack.is_running(TEST_STACK_HOME)
    endpoints = devstack.up(TEST_STACK_HOME)
    try:
        yield Stack(endpoints, home=TEST_STACK_HOME)
    finally:
        if started_here:
            devstack.down(TEST_STACK_HOME)


@pytest.fixture(scope="session")
def local_stack_home(running_stack: Stack) -> Path:
    """The local stack's folder, for tests that stop and restart servers; skips otherwise."""
    if running_stack.home is None:
        pytest.skip("needs the local stack (it restarts servers); this session uses another one")
    return running_stack.home


@pytest.fixture(autouse=True)
def single_broker_durability(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in-process (``cli.main`` reads the environment) create topics with one
    replica, as ``dev status --env`` exports for the one-broker stack; a stack given by the
    environment may say otherwise."""
    for name in ("LEO_TOPIC_REPLICATION_FACTOR", "LEO_TOPIC_MIN_INSYNC_REPLICAS"):
        if name not in os.environ:
            monkeypatch.setenv(name, "1")


@pytest.fixture(scope="session")
def kafka_admin(stack: Endpoints) -> AdminClient:
    return AdminClient({"bootstrap.servers": stack.kafka_bootstrap})


@pytest.fixture
def topic_prefix(kafka_admin: AdminClient) -> Iterator[str]:
    """A prefix no other test uses, e.g. ``t1a2b3c4d.``; its topics are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    yield prefix
    delete_prefixed_topics(kafka_admin, prefix)


def delete_prefixed_topics(kafka_admin: AdminClient, prefix: str) -> None:
    """Delete a test's topics; best effort: a test that stopped the broker must not also fail in
    teardown."""
    with contextlib.suppress(KafkaException, TimeoutError):
        topics = [t for t in kafka_admin.list_topics(timeout=5).topics if t.startswith(prefix)]
        if topics:
            for future in kafka_admin.delete_topics(topics, operation_timeout=10).values():
                future.result(timeout=15)
