"""The cluster fault battery: brokers of a three-node cluster SIGKILLed under load, then a
``publish`` SIGKILLed inside its transaction, judged by a clean run of the same corpus.

Three ``consume`` processes share one group on a three-node KRaft cluster (``kafka_cluster``:
replication 3, ``min.insync.replicas`` 2, the transaction state log likewise) while a publisher
writes the corpus in slices with ``leo-activation publish`` (a run that fails half-way is run
again whole, as README says to resume). Before each slice a broker is SIGKILLed and started
again a few seconds later, in turn: the group's coordinator, the leader of an input partition,
and the leader of a partition the publisher's open transaction is writing (a broker
mid-transaction); the next kill waits until every replica is back in sync, so each is the loss
of one broker. Last, a ``publish`` is SIGKILLed while its transaction is open and its file is
published again.

Then: the state digest equals the clean run's; ``delivery_log`` holds one row per distinct
receipt plus one per queued delivery and no two alike; the delivery-requests topic holds one
request per (dispatch, recipient), exactly the queued ones; nothing was dead-lettered; no
consumer exited (each ran through every kill and stopped only at the SIGTERM that ends the run,
with exit 0 and no traceback); and for each kill, the gap between the last batch any consumer
committed before it and the first one after it is printed.

The size is a parameter: ``CLUSTER_BATTERY_MESSAGES`` and ``CLUSTER_BATTERY_KILLS`` (at least 3:
one of each kind). The default, 20,000 messages and 3 kills, is what the whole suite runs (each kind
of kill, in a few minutes); the full battery is run alone with
``CLUSTER_BATTERY_MESSAGES=100000 CLUSTER_BATTERY_KILLS=10 scripts/test.sh -m cluster``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import IsolationLevel, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._metadata import PartitionMetadata

from leo_activation.codec import make_codec
from leo_activation.db import connect
from leo_activation.dev import corpus
from leo_activation.dev.cluster import MIN_INSYNC_REPLICAS, REPLICAS, Cluster
from leo_activation.dev.stack import Endpoints
from leo_activation.kafka import ensure_topics
from leo_activation.ops.digest import state_digest
from leo_activation.producers.publish import TRANSACTION_TIMEOUT_MS as PUBLISH_TIMEOUT_MS
from leo_activation.settings import TOPIC_SUFFIXES, Settings
from tests.fix_app import (
    deployment_settings,
    drain,
    publish_corpus,
    read_topic,
    share_keys,
    totals,
)
from tests.fix_db import DbUrls, fresh_database
from tests.fix_faults import (
    REPO,
    ConsumerProcess,
    commands_first,
    consumer_env,
    delivery_rows,
    duplicate_delivery_rows,
    partition_ends,
)
from tests.fix_stack import delete_prefixed_topics

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MESSAGES = int(os.environ.get("CLUSTER_BATTERY_MESSAGES", "20000"))
KILLS = int(os.environ.get("CLUSTER_BATTERY_KILLS", "3"))
KINDS = ("coordinator", "leader", "transaction")
CONSUMERS = 3
SEED = 20260113
# Smaller batches than the default: a kill meets consumers inside their Kafka transactions.
BATCH_SIZE = 1000
# A kill waits until the publisher runs and some consumer committed a batch this recently.
BUSY_S = 5.0
MOMENT_TIMEOUT_S = 600.0
DOWN_S = (3.0, 6.0)  # how long a killed broker stays down
PUBLISH_ATTEMPTS = 5
CONVERGE_TIMEOUT_S = 900.0


def battery_corpus(messages: int) -> corpus.Corpus:
    """At least ``messages`` messages with every tenant's activation story (a dispatch fanned
    out to a segment's members, receipts for some of them)."""
    profiles = -(-messages // 22)  # each profile brings ~22 messages, receipts included
    c = corpus.build(
        SEED, n_tenants=3, n_profiles=profiles, n_receipts=profiles * 5 // 2, with_activation=True
    )
    assert c.count() >= messages
    return c


def durability(admin: AdminClient, topic: str) -> tuple[int, int]:
    """A topic's fewest replicas of a partition, and its ``min.insync.replicas``."""
    deadline = time.monotonic() + 30
    # a topic just created is known to every broker's metadata a moment later
    while not (partitions := admin.list_topics(topic, timeout=10).topics[topic].partitions):
        assert time.monotonic() < deadline, f"{topic} has no partitions"
        time.sleep(0.2)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    min_isr = int(config["min.insync.replicas"].value)
    return min(len(p.replicas) for p in partitions.values()), min_isr


def distinct_receipts(c: corpus.Corpus) -> int:
    return len({json.dumps(r, sort_keys=True) for r in c.topics["receipts"]})


def queued_deliveries(admin_url: str) -> set[str]:
    with connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT delivery_id::text FROM delivery_log WHERE delivery_status = 'queued'"
        ).fetchall()
    return {r[0] for r in rows}


# ---------------------------------------------------------------------- the clean run
@dataclass(frozen=True)
class Clean:
    corpus: corpus.Corpus
    settings: Settings  # its topics are kept for the module: the battery shares its data keys
    digest: str
    delivery_rows: int
    queued: int
    seconds: float


@pytest.fixture(scope="module")
def clean(stack: Endpoints, db_template: str, kafka_admin: AdminClient) -> Iterator[Clean]:
    """The corpus, and what one consumer without faults makes of it on the session's broker."""
    c = battery_corpus(MESSAGES)
    prefix = f"clean{uuid.uuid4().hex[:8]}."
    started = time.monotonic()
    try:
        with fresh_database(stack, db_template) as urls:
            settings = deployment_settings(stack, urls, prefix)
            publish_corpus(settings, c)
            commands_first(settings)
            stats = totals(drain(settings))
            assert stats.dead_lettered == 0
            rows, queued = delivery_rows(urls.admin_url), len(queued_deliveries(urls.admin_url))
            assert rows == distinct_receipts(c) + queued
            assert queued > 0
            digest = state_digest(settings)[0]
        yield Clean(c, settings, digest, rows, queued, time.monotonic() - started)
    finally:
        delete_prefixed_topics(kafka_admin, prefix)


# ---------------------------------------------------------------------- the publisher
class Publisher(threading.Thread):
    """Publishes the files put to it, in order, each with ``leo-activation publish``, run again
    whole until it exits 0: README's way to resume a publish that failed half-way."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.env = env
        self.todo: list[tuple[str, Path]] = []
        self.active: str | None = None  # the logical topic being published
        self.runs: list[tuple[str, int, str]] = []  # file, exit code, stderr
        self.failed: str | None = None
        self._more = threading.Condition()
        self._closing = False
        self._proc: subprocess.Popen[str] | None = None
        self._stopped = False

    def put(self, topic: str, path: Path) -> None:
        with self._more:
            self.todo.append((topic, path))
            self._more.notify()

    def idle(self) -> bool:
        with self._more:
            return not self.todo and self.active is None

    def run(self) -> None:
        while True:
            with self._more:
                self._more.wait_for(lambda: bool(self.todo) or self._closing)
                if not self.todo:
                    return
                topic, path = self.todo.pop(0)
                self.active = topic
            try:
                self._publish(topic, path)
            finally:
                with self._more:
                    self.active = None

    def _publish(self, topic: str, path: Path) -> None:
        for _ in range(PUBLISH_ATTEMPTS):
            with self._more:
                if self._stopped:
                    return
                self._proc = subprocess.Popen(
                    publish_argv(topic, path), env=self.env, cwd=REPO,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
            _, err = self._proc.communicate(timeout=600)
            self.runs.append((path.name, self._proc.returncode, err))
            if self._proc.returncode == 0:
                return
        self.failed = f"{path.name}: {err[-2000:]}"

    def stop(self) -> None:
        """Drop what is left to publish and kill the publish under way (a test that failed)."""
        with self._more:
            self.todo.clear()
            self._closing = self._stopped = True
            self._more.notify()
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.idle():
            assert time.monotonic() < deadline, f"the publisher is still busy: {self.todo}"
            assert self.failed is None, self.failed
            time.sleep(0.5)

    def finish(self, timeout: float) -> None:
        with self._more:
            self._closing = True
            self._more.notify()
        self.join(timeout)
        assert not self.is_alive(), f"the publisher did not finish: {self.todo}"
        assert self.failed is None, self.failed


def publish_argv(topic: str, path: Path) -> list[str]:
    return [sys.executable, "-m", "leo_activation", "publish", "--topic", topic, str(path)]


def publish_run(env: dict[str, str], topic: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        publish_argv(topic, path), env=env, cwd=REPO, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


def write_slices(c: corpus.Corpus, folder: Path, n: int) -> list[list[tuple[str, Path]]]:
    """The CDP changes and receipts cut into ``n`` slices, each topic's order kept: per slice,
    the (topic, file) pairs to publish."""
    slices: list[list[tuple[str, Path]]] = [[] for _ in range(n)]
    for topic in ("profile-changes", "receipts"):
        messages = c.topics[topic]
        size = -(-len(messages) // n)
        for i in range(n):
            path = folder / f"{i:02d}-{topic}.jsonl"
            part = messages[i * size : (i + 1) * size]
            path.write_text("".join(json.dumps(m) + "\n" for m in part), encoding="utf-8")
            slices[i].append((topic, path))
    return slices


# ---------------------------------------------------------------------- the kills
@dataclass
class Kill:
    kind: str
    node: int | None  # None: the publish process
    at: float  # time.monotonic()
    down_s: float = 0.0
    whole_s: float = 0.0  # from the restart until every replica was in sync again
    gap_s: float = 0.0  # last committed batch before the kill -> first one after it
    blocked_s: float = 0.0  # a publish kill: its partitions unreadable past it that long


@dataclass
class Battery:
    cluster: Cluster
    settings: Settings
    publisher: Publisher
    consumers: list[ConsumerProcess]
    rng: random.Random
    say: Callable[[str], None]  # a line on the terminal as the battery goes
    _admin: AdminClient | None = None
    unanswered: str = ""  # why the cluster did not answer the last question

    @property
    def admin(self) -> AdminClient:
        """An admin client of the cluster; a new one after a question it could not answer
        (librdkafka's admin client can go on asking a broker that left, or sending a stale
        leader epoch, for its whole life)."""
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap})
        return self._admin

    def alive(self) -> None:
        for n, c in enumerate(self.consumers):
            assert c.proc.poll() is None, f"consumer {n} exited: {''.join(c.tail)[-3000:]}"

    def last_batch(self) -> float:
        return max((c.batches[-1] for c in self.consumers if c.batches), default=0.0)

    def victim(self, kind: str) -> int | None:
        """The broker to kill for ``kind``, if it can be told now."""
        group = self.settings.group_id
        try:
            if kind == "coordinator":
                described = self.admin.describe_consumer_groups([group])[group].result(timeout=10)
                return int(described.coordinator.id)
            if kind == "leader":
                coordinator = self.victim("coordinator")
                leaders = {
                    part.leader
                    for topic in ("profile-changes", "receipts")
                    for part in self.partitions(topic).values()
                }
                others = sorted(leaders - {coordinator}) or sorted(leaders)
                return self.rng.choice(others)
            topic = self.publisher.active
            if topic is None:
                return None
            physical = self.settings.topic(topic)
            stable = partition_ends(self.admin, physical, IsolationLevel.READ_COMMITTED)
            written = partition_ends(self.admin, physical, IsolationLevel.READ_UNCOMMITTED)
            inside = [p for p, end in written.items() if stable.get(p, end) < end]
            if not inside:
                return None
            return self.partitions(topic)[self.rng.choice(inside)].leader
        except (KafkaException, TimeoutError) as exc:  # a leader or coordinator moving
            self._admin, self.unanswered = None, repr(exc)
            return None

    def partitions(self, topic: str) -> dict[int, PartitionMetadata]:
        physical = self.settings.topic(topic)
        return dict(self.admin.list_topics(physical, timeout=10).topics[physical].partitions)

    def kill_a_broker(self, kind: str, files: list[tuple[str, Path]]) -> Kill:
        """Once the publisher runs and the consumers commit, SIGKILL the ``kind`` broker, start
        it again a few seconds later, and wait until the cluster is whole."""
        deadline = time.monotonic() + MOMENT_TIMEOUT_S
        while True:
            if self.publisher.idle():  # the slice went by too fast: publish it again (a no-op)
                for topic, path in files:
                    self.publisher.put(topic, path)
            since = time.monotonic() - self.last_batch()
            active = self.publisher.active
            node = self.victim(kind) if since < BUSY_S and active else None
            if node is not None:
                break
            assert time.monotonic() < deadline, (
                f"no moment to kill the {kind} came in {MOMENT_TIMEOUT_S:.0f}s: the last batch "
                f"{since:.0f}s ago, the publisher {f'on {active}' if active else 'idle'}, "
                f"the cluster's last non-answer {self.unanswered}"
            )
            self.alive()
            time.sleep(0.05)
        kill = Kill(kind, node, time.monotonic())
        self.cluster.kill(node)
        time.sleep(self.rng.uniform(*DOWN_S))
        self.cluster.start(node)
        kill.down_s = time.monotonic() - kill.at
        kill.whole_s = self.cluster.whole()
        self.alive()
        self.say(f"  {kind}: node {node} killed, back after {kill.down_s:.0f}s, in sync "
                 f"{kill.whole_s:.0f}s later")  # fmt: skip
        return kill

    def kill_a_publish(self, topic: str, path: Path) -> tuple[Kill, dict[int, int]]:
        """SIGKILL a ``publish`` of ``path`` while one of its transactions is open; returns the
        kill and the partitions it left blocked (their read-committed ends). A kill that came
        as the transaction was committing (it completes without the producer) is tried again."""
        physical = self.settings.topic(topic)
        for _ in range(PUBLISH_ATTEMPTS):
            kill, stuck = self._kill_publish(topic, path, physical)
            time.sleep(3)  # a commit under way would have moved the read-committed end by now
            stable = partition_ends(self.admin, physical, IsolationLevel.READ_COMMITTED)
            stuck = {p: end for p, end in stuck.items() if stable[p] == end}
            if stuck:
                return kill, stuck
        raise AssertionError("no publish could be killed inside its transaction")

    def wait_unblocked(self, kill: Kill, topic: str, stuck: dict[int, int]) -> None:
        """Until the broker aborted the killed publish's transaction: ``kill.blocked_s`` is how
        long the partitions it wrote stayed unreadable past it."""
        physical = self.settings.topic(topic)
        deadline = time.monotonic() + PUBLISH_TIMEOUT_MS / 1000 + 120
        stable = dict(stuck)
        while any(stable[p] == end for p, end in stuck.items()):
            assert time.monotonic() < deadline, f"{topic} blocked for good behind {stuck}"
            time.sleep(1)
            try:
                stable = partition_ends(self.admin, physical, IsolationLevel.READ_COMMITTED)
            except (KafkaException, TimeoutError):
                self._admin = None
        kill.blocked_s = time.monotonic() - kill.at
        self.say(f"  publish killed inside its transaction: {len(stuck)} partitions of {topic} "
                 f"unreadable past it for {kill.blocked_s:.0f}s")  # fmt: skip

    def _kill_publish(self, topic: str, path: Path, physical: str) -> tuple[Kill, dict[int, int]]:
        """Run ``publish`` and SIGKILL it once some partition is written past its read-committed
        end; returns the kill and those partitions' read-committed ends."""
        proc = subprocess.Popen(
            publish_argv(topic, path), env=self.publisher.env, cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stuck: dict[int, int] = {}
        try:
            while proc.poll() is None and not stuck:
                try:
                    stable = partition_ends(self.admin, physical, IsolationLevel.READ_COMMITTED)
                    written = partition_ends(self.admin, physical, IsolationLevel.READ_UNCOMMITTED)
                except (KafkaException, TimeoutError):
                    self._admin = None
                    continue
                stuck = {p: stable[p] for p, end in written.items() if stable[p] < end}
                if stuck:
                    proc.send_signal(signal.SIGKILL)
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, "publish finished before it could be killed"
        return Kill("publish", None, time.monotonic()), stuck


def batch_gap(consumers: list[ConsumerProcess], at: float) -> float:
    """Seconds between the last batch any consumer committed before ``at`` and the first after."""
    times = sorted(t for c in consumers for t in c.batches)
    before = max((t for t in times if t <= at), default=at)
    after = min((t for t in times if t > at), default=float("inf"))
    return after - before


def wait_converged(settings: Settings, urls: DbUrls, clean: Clean) -> float:
    """Seconds until the database holds the clean run's state (the rows first: cheaper)."""
    started = time.monotonic()
    while time.monotonic() - started < CONVERGE_TIMEOUT_S:
        rows = delivery_rows(urls.admin_url)
        if rows == clean.delivery_rows and state_digest(settings)[0] == clean.digest:
            return time.monotonic() - started
        time.sleep(5)
    raise AssertionError(f"the state did not reach the clean run's in {CONVERGE_TIMEOUT_S:.0f}s")


# ---------------------------------------------------------------------- the battery
@pytest.mark.timeout(7200)
def test_brokers_and_a_publish_killed_under_load_lose_and_double_nothing(
    clean: Clean,
    *,
    kafka_cluster: Cluster,
    stack: Endpoints,
    db_template: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert len(KINDS) <= KILLS, "CLUSTER_BATTERY_KILLS: at least one kill of each kind"

    def say(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)

    started = time.monotonic()
    c = clean.corpus
    say(f"\ncluster battery: {c.count():,} messages, {KILLS} broker kills, then a publish kill")
    slices = write_slices(c, tmp_path, KILLS + 1)
    commands = tmp_path / "commands.jsonl"
    commands.write_text("".join(json.dumps(m) + "\n" for m in c.topics["commands"]), "utf-8")
    with fresh_database(stack, db_template) as urls:
        settings = Settings(
            kafka_bootstrap=kafka_cluster.bootstrap,
            database_url=urls.app_url,
            admin_database_url=urls.admin_url,
            topic_prefix=f"cluster{uuid.uuid4().hex[:8]}.",
            group_id=f"cluster-{uuid.uuid4().hex[:8]}",
            batch_size=BATCH_SIZE,
            # the production durability, the settings' defaults (the one-broker tests lower them)
            topic_replication_factor=REPLICAS,
            topic_min_insync_replicas=MIN_INSYNC_REPLICAS,
        )
        env = consumer_env(settings)
        admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
        ensure_topics(settings)
        share_keys(clean.settings, settings)  # the same profiles sealed to the same bytes
        for logical in TOPIC_SUFFIXES:
            assert durability(admin, settings.topic(logical)) == (REPLICAS, MIN_INSYNC_REPLICAS)
        done = publish_run(env, "commands", commands)
        assert done.returncode == 0, done.stderr
        consumers = [ConsumerProcess(env, until_idle=None) for _ in range(CONSUMERS)]
        publisher = Publisher(env)
        publisher.start()
        battery = Battery(
            kafka_cluster,
            settings,
            publisher,
            consumers,
            random.Random(SEED),
            say,
        )
        kills: list[Kill] = []
        try:
            for n in range(KILLS):
                for topic, path in slices[n]:
                    publisher.put(topic, path)
                kills.append(battery.kill_a_broker(KINDS[n % len(KINDS)], slices[n]))
            for topic, path in slices[KILLS]:
                publisher.put(topic, path)
            publisher.wait_idle(timeout=900)  # the publish kill alone: it is told by the ends
            everything = tmp_path / "receipts.jsonl"
            everything.write_text("".join(json.dumps(m) + "\n" for m in c.topics["receipts"]))
            killed, stuck = battery.kill_a_publish("receipts", everything)
            kills.append(killed)
            publisher.put("receipts", everything)  # resumed: the whole file again
            battery.wait_unblocked(killed, "receipts", stuck)
            publisher.finish(timeout=900)
            converged_s = wait_converged(settings, urls, clean)
            battery.alive()
        finally:
            publisher.stop()
            for consumer in consumers:
                if consumer.proc.poll() is None:
                    consumer.proc.send_signal(signal.SIGTERM)
            codes = [consumer.wait(120) for consumer in consumers]
            for n, consumer in enumerate(consumers):  # beside the nodes' logs, for a post-mortem
                (kafka_cluster.home / f"consume-{n}.log").write_text("".join(consumer.log))
        for kill in kills:
            kill.gap_s = batch_gap(consumers, kill.at)
        logs = ["".join(consumer.log) for consumer in consumers]
        say("\n" + report(c, clean, kills, publisher, time.monotonic() - started))
        say(f"  state equal to the clean run's {converged_s:.0f}s after the last publish")
        say(f"  the consumers logged: {recoveries(logs)}")
        assert codes == [0] * CONSUMERS, [log[-3000:] for log in logs]
        assert not [log for log in logs if "Traceback" in log]
        assert any("blocked behind an open transaction" in log for log in logs)

        assert state_digest(settings)[0] == clean.digest
        queued = queued_deliveries(urls.admin_url)
        assert len(queued) == clean.queued
        assert delivery_rows(urls.admin_url) == distinct_receipts(c) + len(queued)
        assert duplicate_delivery_rows(urls.admin_url) == 0
        codec = make_codec(None)
        requests = Counter(
            (str(r["dispatch_id"]), str(r["delivery_id"]))
            for r in (codec.decode("delivery-requests", m.value())[1]
                      for m in read_topic(settings, "delivery-requests"))
        )  # fmt: skip
        assert max(requests.values()) == 1, "a delivery requested twice"
        assert {delivery for _, delivery in requests} == queued
        assert read_topic(settings, "dead-letters") == []

    assert all(k.gap_s < float("inf") for k in kills), "no batch after a kill"


# What the consumers logged as they recovered, by the start of the line that says it.
RECOVERIES = {
    "transactions aborted and read again": "Kafka transaction aborted",
    "producers replaced (fatal state)": "Kafka producer cannot go on",
    "producers replaced (a transactional call hung)": "Kafka transaction API hung",
    "commits retried": "Kafka commit not yet possible",
    "consumer errors librdkafka recovered from": "Kafka consumer: ",
    "group sessions lost (a rebalance)": "Consumer group session timed out",
    "partitions said blocked behind an open transaction": "blocked behind an open transaction",
}


def recoveries(logs: list[str]) -> str:
    counts = {what: sum(log.count(marker) for log in logs) for what, marker in RECOVERIES.items()}
    return ", ".join(f"{what} {n}" for what, n in counts.items())


def report(
    c: corpus.Corpus, clean: Clean, kills: list[Kill], publisher: Publisher, seconds: float
) -> str:
    """The battery's figures, for the terminal (CI logs) and README."""
    broker_kills = [k for k in kills if k.node is not None]
    resumed = [err.strip().splitlines()[-1:] for _, code, err in publisher.runs if code]
    lines = [
        f"cluster battery: {c.count():,} messages, {CONSUMERS} consumers, {len(broker_kills)} "
        f"broker kills and a publish kill in {seconds:.0f}s (the clean run: {clean.seconds:.0f}s)",
        *(
            f"  {k.kind:<12} node {k.node}: gap between committed batches {k.gap_s:5.1f}s, "
            f"down {k.down_s:3.0f}s, replicas in sync {k.whole_s:3.0f}s after the restart"
            for k in broker_kills
        ),
        f"  longest gap between committed batches after a broker kill: "
        f"{max(k.gap_s for k in broker_kills):.1f}s",
        *(
            f"  publish killed inside its transaction: its partitions unreadable past it for "
            f"{k.blocked_s:.0f}s (the publish transaction timeout is "
            f"{PUBLISH_TIMEOUT_MS / 1000:.0f}s); gap between committed batches {k.gap_s:.1f}s"
            for k in kills
            if k.node is None
        ),
        f"  publish runs that failed and were run again whole: {len(resumed)} {resumed}",
    ]
    return "\n".join(lines)
