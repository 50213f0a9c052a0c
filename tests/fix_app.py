"""pytest plugin: the application wired to the session's stack, one isolated deployment per test
(fresh database + unique topic prefix), and helpers to publish a corpus and drain it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from confluent_kafka import Consumer

from leo_activation.contracts import from_json
from leo_activation.corpus import Corpus
from leo_activation.devstack import Endpoints
from leo_activation.engine import BatchStats, Engine
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_db import DbUrls


@pytest.fixture
def settings(stack: Endpoints, db: DbUrls, topic_prefix: str) -> Settings:
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=db.app_url,
        admin_database_url=db.admin_url,
        topic_prefix=topic_prefix,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        batch_size=500,
        batch_timeout_s=0.2,
    )


def publish_corpus(settings: Settings, corpus: Corpus) -> None:
    for topic, messages in corpus.topics.items():
        publish(settings, topic, [from_json(topic, m) for m in messages])


def drain(settings: Settings, group: str | None = None, idle: float = 2.0) -> list[BatchStats]:
    """Consume every input topic until idle; returns the per-batch accounting."""
    batches: list[BatchStats] = []
    Engine(settings, group=group, on_batch=batches.append).run(until_idle=idle)
    return batches


def read_topic(settings: Settings, logical: str, timeout: float = 10.0) -> list[Any]:
    """Every committed message on a topic (read_committed), from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([settings.topic(logical)])
    messages: list[Any] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    partitions: int | None = None
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            if partitions is not None and len(eof) >= partitions:
                break
            continue
        if msg.error():
            eof.add(msg.partition())
            partitions = len(consumer.assignment())
            if len(eof) >= partitions:
                break
            continue
        messages.append(msg)
    consumer.close()
    return messages


def totals(batches: Iterable[BatchStats]) -> BatchStats:
    total = BatchStats()
    for b in batches:
        total.consumed += b.consumed
        total.applied += b.applied
        total.duplicates += b.duplicates
        total.dead_lettered += b.dead_lettered
    return total
