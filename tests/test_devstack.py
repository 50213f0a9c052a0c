"""The stack the tests run on is real: Kafka 4 with working transactions, PostgreSQL with vector
and citext, and `dev status --env` output a shell can eval."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from leo_activation.dev import stack as devstack
from leo_activation.dev.stack import Endpoints

REPO = Path(__file__).resolve().parent.parent


def _create_topic(admin: AdminClient, name: str, partitions: int = 1) -> None:
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)


def _consume_one(
    bootstrap: str, topic: str, group: str, **extra: object
) -> tuple[Consumer, Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None:
            assert message.error() is None, message.error()
            return consumer, message
    consumer.close()
    raise AssertionError(f"nothing arrived on {topic} within 60s")


def test_kafka_answers_with_its_cluster(kafka_admin: AdminClient) -> None:
    metadata = kafka_admin.list_topics(timeout=10)
    cluster = kafka_admin.describe_cluster(request_timeout=10).result()

    assert metadata.brokers
    assert cluster.cluster_id
    assert len(cluster.nodes) == len(metadata.brokers)


def test_local_stack_status_reports_what_runs(local_stack_home: Path) -> None:
    status = devstack.status(local_stack_home)

    assert status["kafka_running"] is True
    assert status["postgres_running"] is True
    # the version the running broker announced, the cluster this stack formatted
    assert status["kafka_version"] == devstack.KAFKA_VERSION
    assert str(status["kafka_version"]).startswith("4.")
    state = devstack._load_state(devstack._layout(local_stack_home))
    assert state is not None
    assert status["kafka_cluster_id"] == state.cluster_id
    assert status["kafka_brokers"] == 1
    assert int(str(status["postgres_version"]).split(".")[0]) >= 15
    extensions = status["extensions"]
    assert isinstance(extensions, dict)
    assert sorted(extensions) == ["citext", "vector"]


def test_postgres_offers_vector_and_citext(stack: Endpoints) -> None:
    with psycopg.connect(stack.admin_database_url) as conn:
        rows = conn.execute(
            "SELECT name FROM pg_available_extensions WHERE name IN ('vector', 'citext')"
        ).fetchall()

    assert sorted(name for (name,) in rows) == ["citext", "vector"]


def test_dev_status_env_prints_evalable_exports(stack: Endpoints, local_stack_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEO_")}
    env["LEO_DEV_HOME"] = str(local_stack_home)
    command = f"{sys.executable} -m leo_activation dev status --env"

    printed = subprocess.run(
        command.split(), cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    evaluated = subprocess.run(
        ["bash", "-c", f'eval "$({command})" && echo "$LEO_KAFKA_BOOTSTRAP" "$LEO_DATABASE_URL" '
         '"$LEO_ADMIN_DATABASE_URL"'],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    lines = printed.splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "export LEO_KAFKA_BOOTSTRAP",
        "export LEO_DATABASE_URL",
        "export LEO_ADMIN_DATABASE_URL",
        "export LEO_TOPIC_REPLICATION_FACTOR",
        "export LEO_TOPIC_MIN_INSYNC_REPLICAS",
    ]
    assert evaluated.split() == [
        stack.kafka_bootstrap,
        stack.database_url,
        stack.admin_database_url,
    ]


def test_round_trip_kafka_then_postgres(
    stack: Endpoints, kafka_admin: AdminClient, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}round-trip"
    _create_topic(kafka_admin, topic)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b"tenant-1", value=b"hello")
    assert producer.flush(30) == 0

    consumer, message = _consume_one(stack.kafka_bootstrap, topic, f"{topic_prefix}group")
    consumer.close()
    with psycopg.connect(stack.admin_database_url) as conn:
        conn.execute("CREATE TEMP TABLE round_trip (key bytea PRIMARY KEY, value bytea NOT NULL)")
        conn.execute("INSERT INTO round_trip VALUES (%s, %s)", [message.key(), message.value()])
        row = conn.execute("SELECT key, value FROM round_trip").fetchone()

    assert row == (b"tenant-1", b"hello")


def test_transactions_commit_offsets_atomically_on_one_node(
    stack: Endpoints, kafka_admin: AdminClient, topic_prefix: str
) -> None:
    # The consumers' exactly-once loop relies on this: output and offsets in one transaction.
    source, sink, group = f"{topic_prefix}in", f"{topic_prefix}out", f"{topic_prefix}group"
    _create_topic(kafka_admin, source)
    _create_topic(kafka_admin, sink)
    plain = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    plain.produce(source, value=b"ping")
    assert plain.flush(30) == 0

    consumer, message = _consume_one(stack.kafka_bootstrap, source, group)
    offset, partition = message.offset(), message.partition()
    assert offset is not None
    assert partition is not None
    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap, "transactional.id": f"{topic_prefix}tx"}
    )
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(sink, value=b"pong")
    producer.send_offsets_to_transaction(
        [TopicPartition(source, partition, offset + 1)],
        consumer.consumer_group_metadata(),
    )
    producer.commit_transaction(60)
    committed = consumer.committed([TopicPartition(source, partition)], timeout=30)
    consumer.close()

    reader, result = _consume_one(
        stack.kafka_bootstrap,
        sink,
        f"{topic_prefix}reader",
        **{"isolation.level": "read_committed"},
    )
    reader.close()
    assert committed[0].offset == offset + 1
    assert result.value() == b"pong"


def test_a_server_just_started_counts_as_running() -> None:
    """`dev up` checks its broker right after starting it, when /proc/<pid>/cmdline may not name
    the broker yet (empty during start, or a launcher still running): a child of ours that has not
    exited is running. The launcher here execs into the marked command only after a pause."""
    marker = "leo-devstack-liveness-probe"
    child = subprocess.Popen(
        ["sh", "-c", 'sleep 2; m=leo-devstack; exec sleep 5 "$m-liveness-probe"'],
        stdin=subprocess.DEVNULL,
    )
    devstack._CHILDREN[child.pid] = child
    try:
        assert devstack._alive(child.pid, marker) is True
    finally:
        child.kill()
        child.wait()
    assert devstack._alive(child.pid, marker) is False
