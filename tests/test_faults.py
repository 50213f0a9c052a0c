"""The fault battery: crashes, server restarts, poison and a stuck database, on the real broker
and database, each judged by the state digest of a clean run (recovery is only right if it ends
where an uninterrupted run ends).

* SIGKILL a ``leo-activation consume`` process at random moments (seeded) while it works through
  a corpus of more than 50,000 messages on every input topic; restart it each time; the final
  state equals a clean run's, with no missing and no duplicated row.
* Restart the broker, then the database, in the middle of a run: same state, no dead letter.
* A poison corpus interleaved with good traffic: each poison message is dead-lettered with its
  error class, reason and original coordinates; every good message is applied (the state equals
  a run of the good messages alone); the consumer never stops.
* A consumer blocked by a lock in the database never commits offsets ahead of what the
  database holds, and finishes once the lock is released.

The restart tests need the local stack (``local_stack_home``): run this file without the
shared-stack variables, one run at a time. The others run on any stack.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import (
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka.admin import AdminClient

from leo_activation.codec import SINGLE_OBJECT_MAGIC, make_codec
from leo_activation.consumers import HANDLERS
from leo_activation.contracts import from_json
from leo_activation.db import connect, tenant_transaction
from leo_activation.dev import corpus
from leo_activation.dev import stack as devstack
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.kafka import INPUT_TOPICS, ensure_topics, message_key
from leo_activation.ops.digest import state_digest
from leo_activation.producers.dead_letters import HEADER_PREFIX
from leo_activation.producers.publish import CHUNK_MESSAGES, publish
from leo_activation.producers.publish import (
    TRANSACTION_TIMEOUT_MS as PUBLISH_TRANSACTION_TIMEOUT_MS,
)
from leo_activation.settings import Settings
from tests.fix_app import drain, publish_corpus, read_topic, totals
from tests.fix_db import DbUrls, fresh_database, make_tenant
from tests.fix_faults import (
    PROCESS_TIMEOUT_S,
    REPO,
    ConsumerProcess,
    commands_first,
    committed_offsets,
    consumer_env,
    delivery_rows,
    duplicate_delivery_rows,
    partition_ends,
)
from tests.fix_stack import delete_prefixed_topics

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KILLS = 10
KILL_SEED = 20260101


# ---------------------------------------------------------------------- helpers
def app_settings(
    stack: Endpoints, urls: DbUrls, prefix: str, *, output_prefix: str | None = None
) -> Settings:
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=urls.app_url,
        admin_database_url=urls.admin_url,
        topic_prefix=prefix,
        output_prefix=output_prefix,
        group_id=f"f-{uuid.uuid4().hex[:8]}",
        batch_size=500,
        batch_timeout_s=0.2,
        topic_replication_factor=1,
        topic_min_insync_replicas=1,
    )


def delete_topics(admin: AdminClient, prefixes: list[str]) -> None:
    for prefix in prefixes:
        delete_prefixed_topics(admin, prefix)


class EngineThread(threading.Thread):
    """The real engine in a background thread, with its batches and any exception recorded."""

    def __init__(
        self, settings: Settings, until_idle: float = 5.0, topics: tuple[str, ...] = INPUT_TOPICS
    ) -> None:
        super().__init__(daemon=True)
        self.engine = Engine(settings, HANDLERS, topics=topics, on_batch=self.batches_append)
        self.until_idle = until_idle
        self.batches: list[BatchStats] = []
        self.error: BaseException | None = None

    def batches_append(self, stats: BatchStats) -> None:
        self.batches.append(stats)

    def run(self) -> None:
        try:
            self.engine.run(until_idle=self.until_idle)
        except BaseException as exc:
            self.error = exc

    def wait_batches(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.batches) < n and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.batches) >= n, f"engine did {len(self.batches)} batches: {self.error!r}"

    def finish(self, timeout: float = PROCESS_TIMEOUT_S) -> BatchStats:
        self.join(timeout)
        if self.is_alive():
            self.engine.request_stop()
            self.join(30)
            raise AssertionError("the engine did not finish")
        if self.error is not None:
            raise AssertionError(f"the engine stopped: {self.error!r}") from self.error
        return totals(self.batches)


# ---------------------------------------------------------------------- the big corpus
def big_corpus() -> corpus.Corpus:
    """> 50,000 messages on the three input topics, with every kind of command (campaigns,
    events, snapshots, agent decisions, dispatches: the activation story of each tenant)."""
    return corpus.build(
        71, n_tenants=3, n_profiles=2_500, n_segments=2, n_receipts=6_500, with_activation=True
    )


@dataclass(frozen=True)
class Published:
    prefix: str
    messages: int
    clean_digest: str


@pytest.fixture(scope="module")
def big(stack: Endpoints, db_template: str, kafka_admin: AdminClient) -> Iterator[Published]:
    """The big corpus published once for the module, and the digest of one clean run of it."""
    prefix = f"fault{uuid.uuid4().hex[:8]}."
    c = big_corpus()
    assert c.count() >= 50_000
    publisher = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        topic_prefix=prefix,
        topic_replication_factor=1,
        topic_min_insync_replicas=1,
    )
    publish_corpus(publisher, c)
    # the messages, and the data key publish made for each profile it sealed
    messages = c.count() + len(read_topic(publisher, "profile-keys"))
    try:
        with fresh_database(stack, db_template) as urls:
            settings = app_settings(stack, urls, prefix, output_prefix=f"{prefix}clean.")
            commands_first(settings)
            stats = totals(drain(settings))
            assert stats.consumed == messages
            assert stats.dead_lettered == 0
            assert duplicate_delivery_rows(urls.admin_url) == 0
            yield Published(prefix, messages, state_digest(settings)[0])
    finally:
        delete_topics(kafka_admin, [prefix])


# ---------------------------------------------------------------------- SIGKILL
@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    big: Published, stack: Endpoints, db_template: str
) -> None:
    rng = random.Random(KILL_SEED)
    with fresh_database(stack, db_template) as urls:
        settings = app_settings(stack, urls, big.prefix)
        commands_first(settings)
        env = consumer_env(settings)
        kills = 0
        while kills < KILLS:
            consumer = ConsumerProcess(env)
            if not consumer.wait_for_batch():
                assert consumer.wait() == 0, "".join(consumer.tail)[-3000:]
                break  # drained before the last kill: the assertion below says so
            # somewhere in the middle of decoding, the database or the Kafka transaction
            time.sleep(rng.uniform(0.0, 0.8))
            kills += consumer.kill()
        assert kills == KILLS, f"the corpus was drained after {kills} kills"
        last = ConsumerProcess(env)
        assert last.wait() == 0, "".join(last.tail)[-3000:]
        assert state_digest(settings)[0] == big.clean_digest
        assert duplicate_delivery_rows(urls.admin_url) == 0


# ---------------------------------------------------------------------- restarts
@pytest.mark.timeout(600)
@pytest.mark.parametrize("server", ["kafka", "postgres"])
def test_a_server_restart_mid_run_loses_nothing_and_dead_letters_nothing(
    server: str,
    big: Published,
    *,
    local_stack_home: Path,
    stack: Endpoints,
    db_template: str,
    kafka_admin: AdminClient,
) -> None:
    output = f"{big.prefix}{server}{uuid.uuid4().hex[:6]}."
    with fresh_database(stack, db_template) as urls:
        settings = app_settings(stack, urls, big.prefix, output_prefix=output)
        commands_first(settings)
        runner = EngineThread(settings, until_idle=10.0)
        runner.start()
        runner.wait_batches(3)
        restart = devstack.restart_kafka if server == "kafka" else devstack.restart_postgres
        restart(local_stack_home)
        done_before = len(runner.batches)
        stats = runner.finish()
        assert len(runner.batches) > done_before, "nothing was applied after the restart"
        assert stats.dead_lettered == 0
        assert read_topic(settings, "dead-letters") == []
        assert state_digest(settings)[0] == big.clean_digest
        assert duplicate_delivery_rows(urls.admin_url) == 0
    delete_topics(kafka_admin, [output])


BROKER_RESTARTS = 3


@pytest.mark.timeout(900)
def test_broker_restarts_never_stop_consume_and_lose_or_double_nothing(
    big: Published, *, local_stack_home: Path, stack: Endpoints, db_template: str
) -> None:
    """The broker restarted at random moments under a running ``consume`` process: whatever
    state its transactional producer is left in (abortable, fatal, INVALID_TXN_STATE on abort,
    a hung coordinator call), the process goes on and ends where a clean run ends."""
    rng = random.Random(KILL_SEED + 1)
    with fresh_database(stack, db_template) as urls:
        settings = app_settings(stack, urls, big.prefix)
        commands_first(settings)
        # small batches: many transactions, so each restart meets one open
        consumer = ConsumerProcess({**consumer_env(settings), "LEO_BATCH_SIZE": "20"}, 15.0)
        for restart in range(BROKER_RESTARTS):
            assert consumer.wait_for_batch(), f"exited before restart {restart}"
            time.sleep(rng.uniform(0.0, 1.0))
            devstack.restart_kafka(local_stack_home)
            assert consumer.proc.poll() is None, "".join(consumer.tail)[-3000:]
        assert consumer.wait_for_batch(), "exited after the last restart"
        # alive through every restart; a clean stop, and the rest at full speed
        consumer.proc.send_signal(signal.SIGTERM)
        assert consumer.wait() == 0, "".join(consumer.tail)[-3000:]
        assert ConsumerProcess(consumer_env(settings)).wait() == 0
        assert "Traceback" not in "".join(consumer.log)
        assert read_topic(settings, "dead-letters") == []
        assert state_digest(settings)[0] == big.clean_digest
        assert duplicate_delivery_rows(urls.admin_url) == 0


# ---------------------------------------------------------------------- poison
NOW = datetime(2026, 1, 2, tzinfo=UTC)
SQL_TEXT = "x'); DROP TABLE delivery_log; --"


def _receipt(tenant: uuid.UUID | str, **changes: Any) -> dict[str, Any]:
    record = {"tenant_id": tenant, "delivery_id": uuid.uuid4(), "provider": "sendgrid",
              "provider_message_id": "pm-1", "status": "sent", "occurred_at": NOW,
              "destination": "a@example.com", "channel": "email", "provider_response": "{}",
              "correlation_id": None}  # fmt: skip
    return record | changes


@dataclass(frozen=True)
class Poison:
    name: str
    topic: str
    key: bytes
    value: bytes | None
    error_classes: tuple[str, ...]


def poison_corpus(good_tenant: str, disabled: str, unknown: str) -> list[Poison]:
    codec = make_codec(None)
    receipt = codec.encode("delivery_receipt", _receipt(uuid.UUID(good_tenant)))

    def upsert_for(tenant: str) -> bytes:
        return codec.encode(
            "profile_upsert",
            {"tenant_id": tenant, "profile_id": uuid.uuid4(), "version": 1, "occurred_at": NOW,
             "ext_id": "e-1", "email": "MARKMARK", "mobile_number": None, "data_labels": [],
             "push_token": None, "raw_attributes": "{}", "correlation_id": None},
        )  # fmt: skip

    event = {"tenant_id": uuid.UUID(good_tenant), "campaign_code": "c", "event_key": "e",
             "event_name": "n", "event_type": "email", "event_channel": "email",
             "start_at": None, "end_at": None, "embedding": [0.1, 0.2, 0.3],
             "status": "planned", "occurred_at": NOW, "correlation_id": None}  # fmt: skip
    key = f"{good_tenant}:poison".encode()

    def receipt_for(tenant: str, **changes: Any) -> bytes:
        return codec.encode("delivery_receipt", _receipt(tenant, **changes))

    return [
        Poison("header only", "receipts", key, receipt[:5], ("truncated",)),
        Poison("truncated body", "receipts", key, receipt[:30], ("truncated",)),
        Poison("trailing bytes", "receipts", key, receipt + b"\x00\x01", ("trailing_bytes",)),
        Poison("wrong magic", "receipts", key, b"\x00\x01" + receipt[2:], ("bad_magic",)),
        Poison(
            "unknown schema fingerprint",
            "receipts",
            key,
            SINGLE_OBJECT_MAGIC + b"\xde\xad\xbe\xef" * 2 + receipt[10:],
            ("unknown_schema",),
        ),
        Poison("no value", "receipts", key, None, ("empty",)),
        Poison("a receipt on the commands topic", "commands", key, receipt, ("wrong_topic",)),
        # Avro cannot leave tenant_id out; the way to send none is an empty one
        Poison("missing tenant", "receipts", key, receipt_for(""), ("missing_tenant", "bad_uuid")),
        Poison("unknown tenant", "receipts", key, receipt_for(unknown), ("unknown_tenant",)),
        Poison("disabled tenant", "receipts", key, receipt_for(disabled), ("disabled_tenant",)),
        Poison(
            "disabled tenant's profile",
            "profile-changes",
            key,
            upsert_for(disabled),
            ("disabled_tenant",),
        ),
        Poison(
            "disabled tenant's command",
            "commands",
            key,
            codec.encode(
                "campaign_define",
                {
                    "tenant_id": disabled,
                    "campaign_code": "c",
                    "campaign_name": "n",
                    "objective": None,
                    "status": "active",
                    "start_at": None,
                    "end_at": None,
                    "occurred_at": NOW,
                    "correlation_id": None,
                },
            ),
            ("disabled_tenant",),
        ),
        Poison(
            "malformed uuid",
            "receipts",
            key,
            receipt_for(good_tenant, delivery_id="not-a-uuid"),
            ("bad_uuid",),
        ),
        Poison(
            "invalid UTF-8 in a string",
            "profile-changes",
            key,
            upsert_for(good_tenant).replace(b"MARKMARK", b"\xff\xfe\xfd\xfcMARK"),
            ("invalid_utf8",),
        ),
        Poison(
            "oversize string",
            "receipts",
            key,
            receipt_for(good_tenant, provider="p" * 5000),
            ("oversize",),
        ),
        Poison(
            "JSON field that is not JSON",
            "receipts",
            key,
            receipt_for(good_tenant, provider_response="{nope"),
            ("bad_json",),
        ),
        Poison(
            "wrong vector size",
            "commands",
            key,
            codec.encode("event_define", event),
            ("bad_embedding",),
        ),
    ]


def good_corpus() -> tuple[corpus.Corpus, str, str, str]:
    """A small corpus on every topic, a disabled tenant, a valid receipt full of SQL, and the
    ids (good tenant, disabled tenant, never registered tenant)."""
    c = corpus.build(41, n_tenants=2, n_profiles=15, n_receipts=60)
    good = corpus.tenants(41, 2)[0]
    disabled, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    c.add(
        "commands",
        {
            "type": "tenant_register",
            "tenant_id": disabled,
            "tenant_name": "Closed shop",
            "occurred_at": "2026-01-01T00:00:00Z",
        },
    )
    c.add("commands", {"type": "tenant_disable", "tenant_id": disabled,
                       "occurred_at": "2026-01-01T01:00:00Z"})  # fmt: skip
    c.add("receipts", {
        "type": "delivery_receipt", "tenant_id": good, "delivery_id": str(uuid.uuid4()),
        "provider": "sendgrid'; --", "provider_message_id": SQL_TEXT, "status": "sent",
        "occurred_at": "2026-01-02T00:00:00Z", "destination": "x'); DELETE FROM tenant; --@e.com",
        "channel": "email", "provider_response": {"note": "1; DROP TABLE tenant; --"},
    })  # fmt: skip
    return c, good, disabled, unknown


def publish_interleaved(
    settings: Settings, c: corpus.Corpus, poison: list[Poison], seed: int
) -> dict[str, tuple[str, int, int]]:
    """Produce the good non-command messages in order with the poison at random places between
    them; returns each poison message's (topic, partition, offset)."""
    codec = make_codec(None)
    good = [(t, m) for t in ("profile-changes", "receipts") for m in c.topics.get(t, [])]
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(len(good) + len(poison)), len(poison)))
    coords: dict[str, tuple[str, int, int]] = {}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})

    def delivered(name: str) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            coords[name] = (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))

        return callback

    pending = list(poison)
    good_iter = iter(good)
    for position in range(len(good) + len(poison)):
        if slots and position == slots[0]:
            slots.pop(0)
            p = pending.pop(0)
            producer.produce(settings.topic(p.topic), value=p.value, key=p.key,
                             on_delivery=delivered(p.name))  # fmt: skip
        else:
            topic, message = next(good_iter)
            kind, record = from_json(topic, message)
            producer.produce(settings.topic(topic), value=codec.encode(kind, record),
                             key=message_key(topic, record))  # fmt: skip
        producer.poll(0)
    assert producer.flush(60) == 0
    return coords


@pytest.mark.timeout(600)
def test_poison_is_dead_lettered_with_its_reason_and_the_rest_applied(
    settings: Settings, stack: Endpoints, db_template: str, kafka_admin: AdminClient
) -> None:
    c, good, disabled, unknown = good_corpus()
    poison = poison_corpus(good, disabled, unknown)
    ensure_topics(settings)
    publish(settings, "commands", [from_json("commands", m) for m in c.topics["commands"]])
    commands_first(settings)
    coords = publish_interleaved(settings, c, poison, seed=5)
    batches = drain(settings)  # the consumer does not stop on any of them
    assert all(b.balanced() for b in batches)  # every message accounted for, in every batch
    assert totals(batches).dead_lettered == len(poison)  # each poison message exactly once

    codec = make_codec(None)
    letters = read_topic(settings, "dead-letters")
    assert len(letters) == len(poison)
    by_coords = {}
    for letter in letters:
        _, record = codec.decode("dead-letters", letter.value())
        # a consumed message's headers are (name, bytes) pairs; the stub also allows a dict
        pairs = cast("list[tuple[str, bytes]]", letter.headers() or [])
        headers = {k: v.decode() for k, v in pairs}
        assert headers[HEADER_PREFIX + "error.class"] == record["error_class"]
        assert headers[HEADER_PREFIX + "reason"] == record["reason"]
        assert record["reason"]
        coord = (record["original_topic"], record["original_partition"],
                 record["original_offset"])  # fmt: skip
        assert headers[HEADER_PREFIX + "original.offset"] == str(coord[2])
        by_coords[coord] = record
    for p in poison:
        record = by_coords[coords[p.name]]
        assert record["error_class"] in p.error_classes, (p.name, record["reason"])
        assert record["original_value"] == p.value, p.name
        assert record["original_key"] == p.key, p.name

    # SQL in strings is data: stored verbatim (a receipt's destination is not stored at all)
    assert settings.database_url is not None
    with connect(settings.database_url) as conn, tenant_transaction(conn, good):
        row = conn.execute(
            "SELECT provider, destination, provider_response->>'note' FROM delivery_log "
            "WHERE provider_message_id = %s",
            (SQL_TEXT,),
        ).fetchone()
    assert row == ("sendgrid'; --", None, "1; DROP TABLE tenant; --")

    # every good message applied: the same state as the good messages alone
    clean_prefix = f"t{uuid.uuid4().hex[:8]}."
    try:
        with fresh_database(stack, db_template) as urls:
            clean = app_settings(stack, urls, clean_prefix)
            # the good messages as the same bytes: commands through publish, the rest produced
            # as they were above (plaintext upserts, as a producer that does not seal writes them)
            publish(clean, "commands", [from_json("commands", m) for m in c.topics["commands"]])
            publish_interleaved(clean, c, [], seed=5)
            commands_first(clean)
            assert totals(drain(clean)).dead_lettered == 0
            assert state_digest(settings)[0] == state_digest(clean)[0]
    finally:
        delete_topics(kafka_admin, [clean_prefix])


# ---------------------------------------------------------------------- a stuck database
def lock_waiters(admin_url: str, database: str) -> int:
    with connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'leo-activation' AND wait_event_type = 'Lock'",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(300)
def test_a_consumer_stuck_on_the_database_never_commits_ahead_of_it(
    settings: Settings, db: DbUrls, kafka_admin: AdminClient
) -> None:
    c = corpus.build(9, n_tenants=1, n_profiles=0, n_receipts=3000, duplicate_rate=0)
    make_tenant(db.app_url, corpus.tenants(9, 1)[0], "Stuck")
    receipts = [from_json("receipts", m) for m in c.topics["receipts"]]
    publish(settings, "receipts", receipts)
    runner = EngineThread(settings, until_idle=3.0, topics=("receipts",))
    runner.start()
    runner.wait_batches(1)
    with connect(db.admin_url, autocommit=True) as blocker:
        # inserts need ROW EXCLUSIVE, which this blocks (reads still work); held until rollback
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE delivery_log IN EXCLUSIVE MODE")
        deadline = time.monotonic() + 60
        while lock_waiters(db.admin_url, db.name) == 0:
            assert time.monotonic() < deadline, "the consumer never waited for the lock"
            time.sleep(0.1)
        time.sleep(3)  # stuck for a while; the consumer process lives on
        assert runner.is_alive()
        batches, rows = len(runner.batches), delivery_rows(db.admin_url)
        committed = committed_offsets(kafka_admin, settings.group_id)
        # what the group committed is exactly what the database holds, not one message more
        assert committed == rows
        assert 0 < rows < len(receipts)
        blocker.execute("ROLLBACK")
    stats = runner.finish()
    assert len(runner.batches) > batches
    assert stats.applied == len(receipts)
    assert committed_offsets(kafka_admin, settings.group_id) == len(receipts)
    assert delivery_rows(db.admin_url) == len(receipts)


# ---------------------------------------------------------------------- a publish killed
@pytest.mark.timeout(600)
def test_a_publish_killed_inside_its_transaction_blocks_consumers_briefly_and_is_resumable(
    settings: Settings,
    db: DbUrls,
    kafka_admin: AdminClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL a ``publish`` while one of its transactions is open: the chunks before it stay
    committed, consumers wait behind the open one only for the short publish transaction timeout
    (and say so), and publishing the whole file again ends with every receipt exactly once."""
    c = corpus.build(13, n_tenants=1, n_profiles=0, n_receipts=40_000, duplicate_rate=0)
    make_tenant(db.app_url, corpus.tenants(13, 1)[0], "Killed")
    receipts = c.topics["receipts"]
    path = tmp_path / "receipts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in receipts), encoding="utf-8")
    ensure_topics(settings)
    topic = settings.topic("receipts")
    argv = [sys.executable, "-m", "leo_activation", "publish", "--topic", "receipts", str(path)]
    env = consumer_env(settings)
    publisher = subprocess.Popen(argv, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        # kill it once a chunk committed and the next one is being written
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and publisher.poll() is None:
            try:
                stable, written = (
                    sum(partition_ends(kafka_admin, topic, level).values())
                    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED)
                )
            except KafkaException:  # leaders of the new topic not known everywhere yet
                continue
            if 0 < stable < written:
                publisher.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        publisher.kill()
        publisher.wait(30)
    assert publisher.returncode == -signal.SIGKILL, "publish finished before it could be killed"

    caplog.set_level("WARNING", logger="leo_activation.engine.waiting")
    started = time.monotonic()
    first = totals(drain(settings, idle=3.0))
    waited = time.monotonic() - started
    committed = first.consumed
    assert 0 < committed < len(receipts)
    assert committed % CHUNK_MESSAGES == 0, "a transaction was seen in part"
    assert waited < PUBLISH_TRANSACTION_TIMEOUT_MS / 1000 + 45, f"blocked {waited:.0f}s"
    assert any("blocked behind an open transaction" in r.message for r in caplog.records)

    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    again = totals(drain(settings))
    assert again.applied == len(receipts) - committed
    assert again.duplicates == committed
    assert delivery_rows(db.admin_url) == len(receipts)
    assert duplicate_delivery_rows(db.admin_url) == 0
