"""What the fault batteries share (``test_faults.py`` on the one broker, ``test_cluster_faults.py``
on three): ``consume`` as a child process with its log lines, its environment, and what the
database, the group and the topics hold after a fault."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from leo_activation.consumers import HANDLERS
from leo_activation.db import connect
from leo_activation.engine.loop import Engine
from leo_activation.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PROCESS_TIMEOUT_S = 240.0
BATCH_EVENT = '"event":"batch"'


def commands_first(settings: Settings) -> None:
    """Apply the commands topic on its own first (another group): the engine dead-letters a
    message of a tenant not registered yet, and consumers read the topics concurrently, so this
    keeps the expected state independent of how the first fetches interleave."""
    Engine(settings, HANDLERS, topics=["commands"], group=settings.group_id + "-cmd").run(
        until_idle=1.0
    )


def duplicate_delivery_rows(admin_url: str) -> int:
    """Rows of delivery_log whose whole business content (all but the row id and provenance)
    equals another row's."""
    with connect(admin_url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'delivery_log' AND column_name <> ALL(%s) ORDER BY 1",
                (["log_id", "source_topic", "source_partition", "source_offset", "ingested_at"],),
            )
        ]
        row = conn.execute(
            psycopg.sql.SQL(
                "SELECT count(*) - count(DISTINCT ROW({})::text) FROM delivery_log"
            ).format(psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)))
        ).fetchone()
    assert row is not None
    return int(row[0])


def delivery_rows(admin_url: str) -> int:
    with connect(admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM delivery_log").fetchone()
    return int(row[0]) if row else 0


@dataclass
class ConsumerProcess:
    """``leo-activation consume`` as a child process (``--until-idle`` unless ``until_idle`` is
    None), its JSON log lines kept and queued, and when it logged each committed batch."""

    env: dict[str, str]
    until_idle: float | None = 5.0
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    log: list[str] = field(default_factory=list)
    batches: list[float] = field(default_factory=list)  # time.monotonic() of each batch line

    def __post_init__(self) -> None:
        argv = [sys.executable, "-m", "leo_activation", "consume"]
        if self.until_idle is not None:
            argv += ["--until-idle", str(self.until_idle)]
        self.proc = subprocess.Popen(
            argv, env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace",
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def tail(self) -> list[str]:
        return self.log[-40:]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if BATCH_EVENT in line:
                self.batches.append(time.monotonic())
            self.lines.put(line)
            self.log.append(line)

    def wait_for_batch(self, timeout: float = PROCESS_TIMEOUT_S) -> bool:
        """True once the process logged a committed batch; False if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if BATCH_EVENT in self.lines.get(timeout=0.2):
                    return True
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    return False
        raise AssertionError(f"no batch within {timeout:.0f}s: {''.join(self.tail)[-3000:]}")

    def kill(self) -> bool:
        """SIGKILL; False if the process had already exited."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        return True

    def wait(self, timeout: float = PROCESS_TIMEOUT_S) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def consumer_env(settings: Settings) -> dict[str, str]:
    assert settings.kafka_bootstrap
    assert settings.database_url
    assert settings.admin_database_url
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LEO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LEO_DATABASE_URL": settings.database_url,
        "LEO_ADMIN_DATABASE_URL": settings.admin_database_url,
        "LEO_TOPIC_PREFIX": settings.topic_prefix,
        "LEO_GROUP_ID": settings.group_id,
        "LEO_BATCH_SIZE": str(settings.batch_size),
        "LEO_TOPIC_REPLICATION_FACTOR": str(settings.topic_replication_factor),
        "LEO_TOPIC_MIN_INSYNC_REPLICAS": str(settings.topic_min_insync_replicas),
    }


def committed_offsets(admin: AdminClient, group: str) -> int:
    """The sum of the group's committed offsets (-1001 = none counts as 0)."""
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request)[group].result(timeout=30)
    return sum(max(0, tp.offset) for tp in result.topic_partitions or [])


def partition_ends(admin: AdminClient, topic: str, isolation: IsolationLevel) -> dict[int, int]:
    """Each partition's latest offset at that isolation level: read-committed, the last stable
    offset (it stops at the first open transaction); read-uncommitted, the high watermark."""
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = admin.list_offsets(
        {TopicPartition(topic, p): latest for p in partitions}, isolation_level=isolation
    )
    return {tp.partition: f.result(timeout=30).offset for tp, f in futures.items()}
