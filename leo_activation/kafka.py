"""Every Kafka client this package makes, and what it asks of topics.

Settings become librdkafka configuration here and nowhere else: the engine's consumer, the
producers, the readers, the metadata consumer and the admin client. What reaches the cluster
is applied to each of them alike: ``Settings.extra_kafka`` (any librdkafka property: the
``LEO_KAFKA_CONFIG`` properties file, overridden by ``LEO_KAFKA__*`` variables), overridden by
the named security settings.

Keys keep per-key order: commands by tenant, CDP changes by tenant + profile, requests
and receipts by tenant + delivery, data keys by tenant + profile + key id. Input topics keep
their history forever (``retention.ms=-1``): the database is a projection of them, and
rebuilding it needs every message; the keys topic is compacted instead, so an erasure's
tombstones remove its keys. The dead-letter topic has a single partition, so a dead letter's
offset alone names it (``dead-letters redrive``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._metadata import ClusterMetadata
from confluent_kafka.cimpl import NewTopic
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from leo_activation import kafka_log
from leo_activation.errors import LeoError, UsageError, first_line
from leo_activation.settings import TOPIC_SUFFIXES, Settings, SettingsError, is_secret_property

log = logging.getLogger(__name__)

INPUT_TOPICS = ("commands", "profile-changes", "receipts", "profile-keys")
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "commands": ("tenant_id",),
    "profile-changes": ("tenant_id", "profile_id"),
    "receipts": ("tenant_id", "delivery_id"),
    "delivery-requests": ("tenant_id", "delivery_id"),
    # one profile may have several keys (key rings that did not know of each other's)
    "profile-keys": ("tenant_id", "profile_id", "key_id"),
}
# Compacted topics: a tombstone (a message with no value) erases what its key held. The keys
# topic keeps the newest record a key (for ever, or its tombstone while delete.retention.ms);
# the delivery requests, which name destinations in plaintext for the channel connectors, are
# also kept only for the broker's retention.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "profile-keys": {"cleanup.policy": "compact"},
    "delivery-requests": {"cleanup.policy": "compact,delete"},
}
KEPT_FOR_EVER = {"retention.ms": "-1"}
# input topics the consumers also write to: an erasure's key tombstones
READ_AND_WRITTEN = frozenset({"profile-keys"})


def message_key(logical_topic: str, record: Mapping[str, Any]) -> bytes:
    return ":".join(str(record[name]) for name in KEY_FIELDS[logical_topic]).encode()


ADMIN_TIMEOUT_S = 30.0
# Producers' default transaction timeout: sized for large ``publish`` transactions.
TRANSACTION_TIMEOUT_MS = 900_000


def _reveal(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def connection_config(settings: Settings) -> dict[str, Any]:
    """How every client reaches the cluster: bootstrap, security and passthrough properties."""
    named = {
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "sasl.password": settings.kafka_sasl_password,
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
        "ssl.key.password": settings.kafka_ssl_key_password,
    }
    config: dict[str, Any] = {  # extra_kafka: the properties file under LEO_KAFKA__*
        **settings.extra_kafka,
        **{key: value for key, value in named.items() if value is not None},
        # always LEO_KAFKA_BOOTSTRAP, the address every command and message names
        "bootstrap.servers": settings.require_kafka(),
    }
    return {key: _reveal(value) for key, value in config.items()}


def new_transactional_id() -> str:
    """A fresh transactional id: fencing of zombies is by consumer-group generation (KIP-447),
    so none is reused across processes."""
    return f"leo-{uuid.uuid4().hex}"


def _config(settings: Settings, config: Mapping[str, Any]) -> dict[str, Any]:
    return kafka_log.with_logger({**config, **connection_config(settings)})


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """The engine's Kafka consumer settings (the benchmarks' baselines read topics with them too).

    ``session.timeout.ms`` is 10 s instead of librdkafka's 45 s: a consumer that died without
    leaving the group (SIGKILL, OOM, lost host) holds its partitions until its session expires,
    so this bounds how long a restarted or surviving consumer waits to take them over. Heartbeats
    come from librdkafka's own thread, so a long batch does not starve them.
    """
    config = {
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "max.poll.interval.ms": 600_000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        # Prefetch about a batch per partition, in fetches of at most 1 MiB compressed. The
        # librdkafka defaults (100,000 messages a partition, 64 MiB, 1 MiB a partition and 50 MiB
        # a fetch, decompressed on arrival) let memory grow with how far behind the consumer is;
        # these keep batches just as full (README, Performance: RSS flat against the backlog).
        "queued.min.messages": max(1_000, settings.batch_size),
        "queued.max.messages.kbytes": 16_384,
        "fetch.max.bytes": 1 << 20,
        "max.partition.fetch.bytes": 256 << 10,
        "fetch.queue.backoff.ms": 20,  # re-check a full queue soon (default: a whole second)
    }
    return {
        **_config(settings, config),
        # Eager rebalancing, whatever the extras say: a rebalance drops the batch decoded ahead
        # (Engine.run), which is only safe when it takes every partition back and the next
        # assignment resumes from the committed offsets. An incremental protocol would keep some
        # partitions positioned past the dropped messages.
        "group.protocol": "classic",
        "partition.assignment.strategy": "range,roundrobin",
    }


def producer_config(
    settings: Settings,
    transactional: bool = False,
    transaction_timeout_ms: int = TRANSACTION_TIMEOUT_MS,
) -> dict[str, Any]:
    """Idempotent (``enable.idempotence``, ``acks=all``); transactional on request."""
    config = _config(
        settings,
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        },
    )
    if transactional:
        config["transactional.id"] = new_transactional_id()
        # how long the broker keeps a transaction of a producer that died open; read_committed
        # readers of its partitions (and its group's offsets) wait that long
        config["transaction.timeout.ms"] = transaction_timeout_ms
    return config


class _Admin(AdminClient):
    """An admin client that remembers the cluster refusing its login (librdkafka reports that
    only to ``error_cb``; its requests merely time out)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.refused: list[KafkaError] = []
        super().__init__({**config, "error_cb": self._on_error})  # type: ignore[dict-item]

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            self.refused.append(error)


def admin_client(settings: Settings, *, wait: bool = True) -> _Admin:
    """The admin client; by default once the cluster answers (``wait_for_cluster``), so every
    command that starts with one waits for the cluster, and fails at once on a refused login.
    Every command makes one first, so a malformed client configuration is reported here."""
    config = _config(settings, {})
    try:
        admin = _Admin(config)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc
        message = str(reason)
        for key, value in config.items():  # librdkafka may quote a value; never a secret one
            if is_secret_property(key) and value:
                message = message.replace(str(value), "***")
        raise SettingsError(f"Kafka client configuration: {message}") from None
    if wait:
        wait_for_cluster(settings, admin)
    return admin


def reader(settings: Settings, purpose: str) -> Consumer:
    """A consumer for ``assign()`` reads: read-committed, reports partition ends, and never
    commits, so its throw-away group id leaves no group behind."""
    return Consumer(
        _config(
            settings,
            {
                "group.id": f"leo-{purpose}-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )


def group_positions(settings: Settings, group: str) -> Consumer:
    """A consumer that only asks where ``group`` stands: its committed offsets, the topics'
    read-committed ends. It never subscribes nor commits, so it does not join the group. Its
    requests go on connections of their own: on the group's consumer they would queue behind a
    fetch the broker holds open (``fetch.wait.max.ms``) whenever the consumer has caught up."""
    return Consumer(
        _config(
            settings,
            {"group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed"},
        )
    )


def metadata_consumer(settings: Settings) -> Consumer:
    """A consumer used only for metadata queries (watermarks, offsets by time): it never
    subscribes nor commits. It keeps librdkafka's default isolation, so high watermarks are the
    log end, open transactions included."""
    return Consumer(
        _config(
            settings,
            {"group.id": f"leo-inspect-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False},
        )
    )


# One metadata request of the start-up wait: short, so a refused login is reported in seconds.
STARTUP_ATTEMPT_S = 2.0


class _NoCluster(Exception):
    """One start-up attempt found no answering broker (retried until the start-up deadline)."""


def _log_attempt(state: RetryCallState) -> None:
    delay = state.next_action.sleep if state.next_action else 0.0
    outcome = state.outcome.exception() if state.outcome else None
    log.warning(
        "Kafka does not answer yet (attempt %d: %s); next try in %.1fs",
        state.attempt_number,
        outcome,
        delay,
    )


def wait_for_cluster(settings: Settings, admin: _Admin) -> ClusterMetadata:
    """The cluster's metadata, waiting for a broker up to ``kafka_startup_timeout_s`` (backing
    off, one log line an attempt). A refused login is not retried: waiting cannot fix it."""

    def attempt() -> ClusterMetadata:
        try:
            metadata = admin.list_topics(timeout=STARTUP_ATTEMPT_S)
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if admin.refused:
                raise LeoError(f"Kafka refused the login: {admin.refused[0].str()}") from None
            raise _NoCluster(first_line(exc)) from None
        if not metadata.brokers:
            raise _NoCluster("no broker in the metadata")
        return metadata

    timeout = settings.kafka_startup_timeout_s
    try:
        for step in Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception_type(_NoCluster),
            before_sleep=_log_attempt,
            reraise=True,
        ):
            with step:
                return attempt()
    except _NoCluster as exc:
        raise LeoError(
            f"Kafka at {settings.require_kafka()} did not answer within {timeout:g}s "
            f"(LEO_KAFKA_STARTUP_TIMEOUT_S): {exc}"
        ) from None
    raise AssertionError("unreachable: Retrying either returns or raises")


def ensure_topics(settings: Settings, logical: Collection[str] = TOPIC_SUFFIXES) -> None:
    """Create any missing topic of this deployment (idempotent), with the replication factor
    and ``min.insync.replicas`` of the settings; warn of existing ones below them. Waits for
    the cluster first (``wait_for_cluster``)."""
    admin = admin_client(settings, wait=False)
    metadata = wait_for_cluster(settings, admin)
    # a topic read and written (the keys topic) also where its output goes (verify's scratch)
    physical = {(n, settings.topic(n)) for n in logical} | {
        (n, settings.topic(n, output=True)) for n in logical if n in READ_AND_WRITTEN
    }
    missing = sorted((n, p) for n, p in physical if p not in metadata.topics)
    existing = sorted((n, p) for n, p in physical if p in metadata.topics)
    _warn_weak_topics(settings, admin, metadata, existing)
    if not missing:
        return
    replicas, brokers = settings.topic_replication_factor, len(metadata.brokers)
    if brokers < replicas:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LeoError(
            f"cannot create topic {missing[0][1]}{more} with "
            f"replication factor {replicas}: only {brokers} broker(s) live "
            "(LEO_TOPIC_REPLICATION_FACTOR; a single-broker cluster needs 1)"
        )
    wanted = [
        NewTopic(
            topic,
            num_partitions=1 if name == "dead-letters" else settings.topic_partitions,
            replication_factor=replicas,
            config={
                "min.insync.replicas": str(settings.topic_min_insync_replicas),
                **TOPIC_CONFIGS.get(name, KEPT_FOR_EVER),
            },
        )
        for name, topic in missing
    ]
    for topic, future in admin.create_topics(wanted, operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise LeoError(f"cannot create topic {topic}: {exc}") from exc


def _warn_weak_topics(
    settings: Settings,
    admin: AdminClient,
    metadata: ClusterMetadata,
    topics: list[tuple[str, str]],
) -> None:
    """One warning line per topic (logical, physical) whose replication or
    ``min.insync.replicas`` is below the settings (``acks=all`` is then acknowledged by fewer
    copies than the deployment asks for), and one per topic that should be compacted and is not
    (made by a release before erasure: an erasure's tombstones would not remove what they name)."""
    if not topics:
        return
    names = {physical: name for name, physical in topics}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for _, topic in topics]
    futures = admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
    for resource, future in futures.items():
        topic = resource.name
        replicas = min(len(p.replicas) for p in metadata.topics[topic].partitions.values())
        try:
            entries = future.result()
        except KafkaException as exc:
            log.warning("cannot read the configuration of topic %s: %s", topic, first_line(exc))
            continue
        wanted_policy = TOPIC_CONFIGS.get(names[topic], {}).get("cleanup.policy")
        policy = entries.get("cleanup.policy")
        if wanted_policy and (
            policy is None or set(str(policy.value).split(",")) != set(wanted_policy.split(","))
        ):
            log.warning(
                "topic %s has cleanup.policy %s, not %s: an erasure's tombstones do not remove "
                "what they name there; kafka-configs --alter --entity-type topics --entity-name "
                "%s --add-config cleanup.policy=[%s]",
                topic, None if policy is None else policy.value, wanted_policy, topic,
                wanted_policy,
            )  # fmt: skip
        entry = entries.get("min.insync.replicas")
        min_isr = int(entry.value) if entry is not None and entry.value else 1
        if (
            replicas < settings.topic_replication_factor
            or min_isr < settings.topic_min_insync_replicas
        ):
            log.warning(
                "topic %s has replication factor %d and min.insync.replicas %d, below the "
                "settings' %d and %d (LEO_TOPIC_REPLICATION_FACTOR, "
                "LEO_TOPIC_MIN_INSYNC_REPLICAS): raise them with kafka-reassign-partitions "
                "and kafka-configs",
                topic,
                replicas,
                min_isr,
                settings.topic_replication_factor,
                settings.topic_min_insync_replicas,
            )


def topic_partitions(admin: AdminClient, physical: str) -> list[int]:
    """The topic's partition numbers; UsageError if the topic does not exist."""
    try:
        metadata = admin.list_topics(topic=physical, timeout=ADMIN_TIMEOUT_S).topics.get(physical)
    except KafkaException as exc:
        raise LeoError(f"Kafka does not answer: {exc}") from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise UsageError(f"topic {physical} does not exist")
    return sorted(metadata.partitions)


def committed_offsets(
    admin: AdminClient, group: str, physical: str, partitions: list[int]
) -> dict[int, int | None]:
    """The group's committed offset per partition (None: it has none there yet)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(physical, p) for p in partitions])
    future = admin.list_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)[group]
    try:
        result = future.result()
    except KafkaException as exc:
        raise LeoError(f"cannot read the offsets of group {group}: {exc}") from exc
    return {
        tp.partition: (None if tp.offset < 0 else int(tp.offset)) for tp in result.topic_partitions
    }


READ_TIMEOUT_S = 60.0


def read_to_end(
    settings: Settings, logical: str, start: dict[int, int] | None = None
) -> list[Message]:
    """Every committed message of a topic from ``start`` (partition -> offset; default the
    beginning) to its current end, in partition then offset order."""
    consumer = reader(settings, "read")
    topic = settings.topic(logical)
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        offsets = start or {}
        consumer.assign(
            [TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        messages: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise LeoError(
                    f"reading {topic} did not reach its end within {READ_TIMEOUT_S:.0f}s"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition() or 0))
                    continue
                if error.retriable():  # e.g. a leader moving: the client retries by itself
                    continue
                raise LeoError(f"reading {topic}: {error}")
            messages.append(msg)
        messages.sort(key=lambda m: (int(m.partition() or 0), int(m.offset() or 0)))
        return messages
    finally:
        consumer.close()
