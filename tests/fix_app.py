"""pytest plugin: the application wired to the session's stack, one isolated deployment per test
(fresh database + unique topic prefix), and helpers to publish a corpus and drain it."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Message, Producer

from leo_activation.consumers import HANDLERS
from leo_activation.contracts import from_json
from leo_activation.dev.corpus import Corpus
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.kafka import ensure_topics, producer_config, read_to_end
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_db import DbUrls


@pytest.fixture
def settings(stack: Endpoints, db: DbUrls, topic_prefix: str) -> Settings:
    return deployment_settings(stack, db, topic_prefix)


def deployment_settings(stack: Endpoints, db: DbUrls, topic_prefix: str) -> Settings:
    """One isolated deployment: its own database, topic prefix and consumer group."""
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=db.app_url,
        admin_database_url=db.admin_url,
        topic_prefix=topic_prefix,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        batch_size=500,
        batch_timeout_s=0.2,
        # one broker: the production defaults (3 and 2) could not be met
        topic_replication_factor=1,
        topic_min_insync_replicas=1,
    )


def publish_corpus(settings: Settings, corpus: Corpus) -> None:
    for topic, messages in corpus.topics.items():
        publish(settings, topic, [from_json(topic, m) for m in messages])


def drain(settings: Settings, group: str | None = None, idle: float = 2.0) -> list[BatchStats]:
    """Consume every input topic until idle; returns the per-batch accounting."""
    batches: list[BatchStats] = []
    Engine(settings, HANDLERS, group=group, on_batch=batches.append).run(until_idle=idle)
    return batches


def read_topic(settings: Settings, logical: str) -> list[Message]:
    """Every committed message on a topic (read_committed), from the beginning."""
    return read_to_end(settings, logical)


totals = BatchStats.total


def share_keys(source: Settings, target: Settings) -> None:
    """The source deployment's data keys, produced to the target's keys topic as they are: the
    target's publish then seals the same profiles to the same bytes."""
    ensure_topics(target)
    producer = Producer(producer_config(target))
    for m in read_topic(source, "profile-keys"):
        producer.produce(target.topic("profile-keys"), key=m.key(), value=m.value())
    assert producer.flush(30) == 0
