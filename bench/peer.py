"""``--peer connect``: the peer a user would deploy instead, Kafka Connect with the Debezium JDBC
sink, measured on the same broker, database and receipts as the product's own ``consume``.

The peer gets the work made easy: each message is the ``delivery_log`` row already computed (the
product's own rows, read back from its first run), as JSON with an embedded schema, written by
the sink's UNNEST writer as an upsert on ``(tenant_id, log_id)`` as the table owner (no RLS, no
validation, no hashing, at-least-once). Both sides run as child processes and are timed the same
way from outside: ``count(*)`` of the target table sampled every ``SAMPLE_S``, from the first
sample with rows to the one with all of them; CPU is sampled over that same window (the consumer
processes', and PostgreSQL's: the postmaster and its children, the sampler's own backend
excluded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench import gen
from bench.env import BenchEnv, Database
from bench.measure import consume_env
from leo_activation import db
from leo_activation.consumers.receipts import COLUMNS as RECEIPT_COLUMNS
from leo_activation.dev.stack import KAFKA_VERSION
from leo_activation.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CONNECT_VERSION = KAFKA_VERSION  # the worker is the broker's release
DEBEZIUM_VERSION = "3.6.0.Final"  # the newest JDBC sink Maven Central serves
# debezium-connector-jdbc 3.6.0.Final asks for hibernate-agroal 7.2.6.Final, which is not served
HIBERNATE_VERSION = "7.2.19.Final"
LOG4J_VERSION = "2.24.3"
BATCH = 5_000
SAMPLE_S = 0.1
START_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 900.0
CONNECT_TOPIC = "connect-receipts"  # the peer's topic, under the run's prefix (dropped at cleanup)

_WORKER_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.leo-activation</groupId><artifactId>connect-worker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId>
      <version>{CONNECT_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-json</artifactId>
      <version>{CONNECT_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

# Jackson, the Connect API and slf4j come from the worker: a second jackson-databind inside the
# plugin folder breaks Hibernate ("Jdk8Module not a subtype").
_FROM_WORKER = "".join(
    f"<exclusion><groupId>{g}</groupId><artifactId>*</artifactId></exclusion>"
    for g in ("com.fasterxml.jackson.core", "com.fasterxml.jackson.datatype", "org.apache.kafka",
              "org.slf4j")
)  # fmt: skip
_PLUGIN_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.leo-activation</groupId><artifactId>connect-jdbc-sink</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencyManagement><dependencies>
    <dependency><groupId>org.hibernate.orm</groupId><artifactId>hibernate-core</artifactId>
      <version>{HIBERNATE_VERSION}</version></dependency>
  </dependencies></dependencyManagement>
  <dependencies>
    <dependency><groupId>io.debezium</groupId><artifactId>debezium-connector-jdbc</artifactId>
      <version>{DEBEZIUM_VERSION}</version>
      <exclusions>{_FROM_WORKER}
        <exclusion><groupId>org.hibernate</groupId><artifactId>hibernate-agroal</artifactId></exclusion>
      </exclusions></dependency>
    <dependency><groupId>org.hibernate.orm</groupId><artifactId>hibernate-agroal</artifactId>
      <version>{HIBERNATE_VERSION}</version>
      <exclusions>{_FROM_WORKER}</exclusions></dependency>
  </dependencies>
</project>
"""


# ---------------------------------------------------------------------- fetching


def _mvn_copy(pom: str, folder: Path, marker: str) -> Path:
    """``folder``/libs: the pom's runtime dependencies, fetched once with ``mvn``; renamed into
    place only when complete, so an interrupted fetch is retried rather than half-used."""
    libs = folder / "libs"
    if (libs / marker).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("mvn not found: the Connect peer needs Apache Maven to fetch its jars")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pom.xml").write_text(pom, encoding="utf-8")
    partial = folder / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(folder / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    if result.returncode != 0 or not (partial / marker).is_file():
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"mvn failed fetching {marker}: {' '.join(tail)}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs


@dataclass(frozen=True)
class ConnectJars:
    worker: Path  # the worker's class path folder
    plugins: Path  # plugin.path: one folder per plugin


def fetch(cache: Path = REPO / ".cache") -> ConnectJars:
    worker = _mvn_copy(
        _WORKER_POM, cache / f"connect-{CONNECT_VERSION}", f"connect-runtime-{CONNECT_VERSION}.jar"
    )
    plugins = cache / f"connect-plugins-{DEBEZIUM_VERSION}"
    marker = f"debezium-connector-jdbc-{DEBEZIUM_VERSION}.jar"
    _mvn_copy(_PLUGIN_POM, plugins / "debezium-jdbc", marker)  # a plugin is a folder of jars
    return ConnectJars(worker, plugins)


# ---------------------------------------------------------------------- the peer's input

_UUID = "io.debezium.data.Uuid"
# (column, Connect type, optional, Debezium semantic name): how the sink learns the column types
_FIELDS: tuple[tuple[str, str, bool, str | None], ...] = (
    ("tenant_id", "string", False, _UUID),
    ("log_id", "string", False, _UUID),
    ("delivery_id", "string", False, _UUID),
    ("channel", "string", True, None),
    ("destination", "string", True, None),
    ("delivery_status", "string", False, None),
    ("provider", "string", True, None),
    ("provider_message_id", "string", True, None),
    ("provider_response", "string", False, "io.debezium.data.Json"),
    ("sent_at", "string", False, "io.debezium.time.ZonedTimestamp"),
    ("correlation_id", "string", True, None),
    ("source_topic", "string", True, None),
    ("source_partition", "int32", True, None),
    ("source_offset", "int64", True, None),
)
assert tuple(f[0] for f in _FIELDS) == RECEIPT_COLUMNS
_SCHEMA = json.dumps(
    {
        "type": "struct",
        "name": "delivery_log",
        "optional": False,
        "fields": [
            {"field": c, "type": t, "optional": o, **({"name": n, "version": 1} if n else {})}
            for c, t, o, n in _FIELDS
        ],
    },
    separators=(",", ":"),
)
_EXPORT = (
    "SELECT tenant_id::text, log_id::text, delivery_id::text, channel, destination, "
    "delivery_status, provider, provider_message_id, provider_response::text, "
    "to_json(sent_at) #>> '{}', correlation_id, source_topic, source_partition, source_offset "
    "FROM delivery_log ORDER BY source_partition, source_offset"
)
# every column but the ingestion time, in a canonical text form
_DIGEST = (
    "SELECT count(*), md5(coalesce(string_agg((to_jsonb(d) - 'ingested_at')::text, E'\\n' "
    "ORDER BY tenant_id, log_id), '')) FROM delivery_log d"
)


def rows_digest(database: Database) -> tuple[int, str]:
    """(rows, digest) of ``delivery_log`` as the owner sees it (every tenant)."""
    with db.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        found = conn.execute(_DIGEST).fetchone()
    assert found is not None
    return int(found[0]), str(found[1])


def _exported_rows(database: Database) -> Iterator[tuple[Any, ...]]:
    with db.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        with conn.cursor() as cur:
            yield from cur.stream(_EXPORT)


def publish_rows(settings: Settings, source: Database, topic: str) -> int:
    """The rows the product wrote into ``source``, as the peer's JSON messages on ``topic`` (the
    same partition each came from, so each partition holds the same receipts in the same order;
    keyed by tenant as the product's topic is)."""
    physical = settings.topic_prefix + topic  # the run's prefix: dropped at cleanup
    admin = AdminClient({"bootstrap.servers": settings.require_kafka()})
    created = admin.create_topics([NewTopic(physical, num_partitions=settings.topic_partitions)])
    for future in created.values():
        future.result(timeout=30)
    producer = Producer(
        {"bootstrap.servers": settings.require_kafka(), "linger.ms": 20, "compression.type": "none"}
    )
    n = 0
    head = f'{{"schema":{_SCHEMA},"payload":'
    for row in _exported_rows(source):
        payload = json.dumps(dict(zip(RECEIPT_COLUMNS, row, strict=True)), separators=(",", ":"))
        value = f"{head}{payload}}}".encode()
        while True:
            try:
                producer.produce(physical, value, key=row[0].encode(), partition=row[12])
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(300) != 0:
        raise RuntimeError("the peer's messages were not all delivered")
    return n


# ---------------------------------------------------------------------- running and timing


@dataclass
class Run:
    label: str
    count: int  # rows that arrived inside the timed window
    seconds: float
    consumer_cpu_s: float
    pg_cpu_s: float
    rows: tuple[int, str] = (0, "")  # (count, digest) of the rows the run left in its database
    # the same over the window's second half: warmed up (the JVM's JIT, the caches)
    second_half: Run | None = None

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def per_million(self, cpu_s: float) -> float:
        return cpu_s * 1e6 / self.count if self.count else float("inf")


def _cpu(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def timed(
    label: str, database: Database, expected: int, procs: Sequence[subprocess.Popen[bytes]]
) -> Run:
    """Sample ``delivery_log``'s row count until ``expected`` rows are there; the rate and CPU
    over the window from the first sample with rows to the first with all of them, and over its
    second half."""
    consumers = [psutil.Process(p.pid) for p in procs]
    with db.connect(database.admin_url, autocommit=True) as conn:
        found = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert found is not None
        sampler = psutil.Process(int(found[0]))
        postmaster = sampler.parent()
        assert postmaster is not None

        def pg_cpu() -> float:
            others = [p for p in postmaster.children(recursive=True) if p.pid != sampler.pid]
            return _cpu([postmaster, *others])

        deadline = time.monotonic() + START_TIMEOUT_S
        first: tuple[float, int, float, float] | None = None
        half: tuple[float, int, float, float] | None = None
        while True:
            found = conn.execute("SELECT count(*) FROM delivery_log").fetchone()
            count = int(found[0]) if found else 0
            now = time.perf_counter()
            if count and first is None:
                first = (now, count, _cpu(consumers), pg_cpu())
                deadline = time.monotonic() + RUN_TIMEOUT_S
            elif first is not None and half is None and 2 * count >= first[1] + expected:
                half = (now, count, _cpu(consumers), pg_cpu())
            if count >= expected and first is not None:
                last = (now, count, _cpu(consumers), pg_cpu())
                break
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {count} of {expected} rows (exited: {dead})")
            time.sleep(SAMPLE_S)

    def between(a: tuple[float, int, float, float], b: tuple[float, int, float, float]) -> Run:
        return Run(label, b[1] - a[1], b[0] - a[0], b[2] - a[2], b[3] - a[3])

    run = between(first, last)
    run.second_half = between(half or first, last)
    return run


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _jdbc(database: Database) -> tuple[str, str, str]:
    """(JDBC URL, user, password) of the owner's DSN."""
    info = psycopg.conninfo.conninfo_to_dict(database.admin_url)
    url = f"jdbc:postgresql://{info['host']}:{info['port']}/{info['dbname']}"
    return url, str(info.get("user", "")), str(info.get("password", ""))


def _properties(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def connect_worker(
    jars: ConnectJars,
    settings: Settings,
    database: Database,
    topic: str,
    *,
    tasks: int,
    work: Path,
) -> subprocess.Popen[bytes]:
    """A standalone Connect worker running the JDBC sink from ``topic`` into ``database``."""
    work.mkdir(parents=True, exist_ok=True)
    url, user, password = _jdbc(database)
    worker = {
        "bootstrap.servers": settings.require_kafka(),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "offset.storage.file.filename": work / "offsets",
        "plugin.path": jars.plugins,
        "listeners": f"http://127.0.0.1:{_free_port()}",
        # a sink batch is at most one poll
        "consumer.max.poll.records": BATCH,
    }
    connector = {
        "name": f"leo-peer-{work.name}",
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": tasks,
        "topics": settings.topic_prefix + topic,
        "connection.url": url,
        "connection.username": user,
        "connection.password": password,
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "tenant_id,log_id",
        "schema.evolution": "none",
        "collection.name.format": "delivery_log",
        "batch.size": BATCH,
        "dialect.postgres.unnest.insert.enabled": "true",
    }
    (work / "worker.properties").write_text(_properties(worker), encoding="utf-8")
    (work / "sink.properties").write_text(_properties(connector), encoding="utf-8")
    (work / "log4j2.properties").write_text(
        _properties({
            "rootLogger.level": "INFO",
            "rootLogger.appenderRef.file.ref": "file",
            "appender.file.type": "File",
            "appender.file.name": "file",
            "appender.file.fileName": work / "connect.log",
            "appender.file.layout.type": "PatternLayout",
            "appender.file.layout.pattern": "%d %p %c{1} %m%n",
        }),
        encoding="utf-8",
    )  # fmt: skip
    java = os.environ.get("JAVA_HOME")
    java_bin = str(Path(java, "bin", "java")) if java else shutil.which("java") or "java"
    argv = [
        # the heap and collector connect-standalone.sh gives it
        java_bin, "-Xms256m", "-Xmx2g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}",
        "-cp", f"{jars.worker}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
        str(work / "worker.properties"), str(work / "sink.properties"),
    ]  # fmt: skip
    out = (work / "console.log").open("wb")
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    finally:
        out.close()


def consume_processes(settings: Settings, n: int, log: Path) -> list[subprocess.Popen[bytes]]:
    """``n`` ``leo-activation consume`` processes in one group, as a user would scale it out."""
    argv = [sys.executable, "-m", "leo_activation", "consume", "--until-idle", "3",
            "--batch-size", str(BATCH)]  # fmt: skip
    procs = []
    for i in range(n):
        with (log.parent / f"{log.name}.{i}").open("wb") as err:
            procs.append(
                subprocess.Popen(
                    argv, env=consume_env(settings), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
                )
            )
    return procs


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---------------------------------------------------------------------- one round


@dataclass
class Peer:
    """The run's shared input: the product's receipts topic and the peer's JSON copy of it."""

    env: BenchEnv
    jars: ConnectJars
    tenants: list[uuid.UUID]
    prefix: str
    expected: int
    work: Path
    published: bool = False  # the peer's JSON copy of the product's first rows
    runs: int = 0

    def _database(self) -> tuple[Database, Settings]:
        self.runs += 1
        database = self.env.fresh_database(f"peer{self.runs}")
        self.env.add_tenants(database, self.tenants)
        return database, self.env.settings(database, self.prefix, f"peer-{self.runs}")

    def ours(self, processes: int) -> Run:
        database, settings = self._database()
        label = f"ours, {processes} consume process{'es' if processes > 1 else ''}"
        log = self.work / f"consume-{self.runs}"
        procs = consume_processes(settings, processes, log)
        try:
            run = timed(label, database, self.expected, procs)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {_tail(log.parent / f'{log.name}.0')}") from None
        finally:
            for p in procs:
                _stop(p, 60)
        run.rows = rows_digest(database)
        if not self.published:  # the peer's input: exactly these rows
            self.published = True
            started = time.perf_counter()
            n = publish_rows(settings, database, CONNECT_TOPIC)
            print(f"  published {n:,} rows as JSON in {time.perf_counter() - started:.1f}s")
        return run

    def connect(self, tasks: int) -> Run:
        database, settings = self._database()
        label = f"Kafka Connect JDBC sink, {tasks} task{'s' if tasks > 1 else ''}"
        work = self.work / f"connect-{self.runs}"
        proc = connect_worker(self.jars, settings, database, CONNECT_TOPIC, tasks=tasks, work=work)
        try:
            run = timed(label, database, self.expected, [proc])
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {_tail(work / 'connect.log')}") from None
        finally:
            _stop(proc, 30)
        run.rows = rows_digest(database)
        return run


# ---------------------------------------------------------------------- the section


def prepare(env: BenchEnv, n: int, work: Path) -> Peer:
    """Fetch the jars (once) and publish ``n`` receipts on the run's receipts topic."""
    started = time.perf_counter()
    jars = fetch()
    print(f"  Connect {CONNECT_VERSION} + Debezium JDBC sink {DEBEZIUM_VERSION} jars ready "
          f"({time.perf_counter() - started:.1f}s)", flush=True)  # fmt: skip
    tenants = gen.bench_tenants(6, 4)
    prefix = env.prefix("peer")
    peer = Peer(env, jars, tenants, prefix, n, work)
    settings = env.settings(Database("-", "", ""), prefix, "peer-publish")
    started = time.perf_counter()
    gen.publish(settings, "receipts", gen.receipts(tenants, n))
    print(f"  published {n:,} receipts in {time.perf_counter() - started:.1f}s", flush=True)
    return peer


def _figures(run: Run) -> str:
    text = (
        f"consumer {run.per_million(run.consumer_cpu_s):.1f} CPU-s/M, "
        f"PostgreSQL {run.per_million(run.pg_cpu_s):.1f} CPU-s/M; {run.count:,} rows in "
        f"{run.seconds:.1f} s"
    )
    if (half := run.second_half) is not None:
        text += (
            f"; second half {half.per_second:,.0f} msg/s, consumer "
            f"{half.per_million(half.consumer_cpu_s):.1f} CPU-s/M"
        )
    return text


def _halves(runs: list[Run]) -> list[Run]:
    return [r.second_half or r for r in runs]


def _ratios(ours: list[Run], theirs: list[Run]) -> dict[str, float]:
    """ours / theirs of the medians over the rounds: msg/s, consumer and PostgreSQL CPU a msg."""

    def median(rs: list[Run], figure: Callable[[Run], float]) -> float:
        return statistics.median(figure(r) for r in rs)

    figures: dict[str, Callable[[Run], float]] = {
        "rate": lambda r: r.per_second,
        "consumer_cpu": lambda r: r.per_million(r.consumer_cpu_s),
        "pg_cpu": lambda r: r.per_million(r.pg_cpu_s),
    }
    return {name: median(ours, f) / median(theirs, f) for name, f in figures.items()}


def bench_peer(env: BenchEnv, report: Any, sizes: dict[str, float]) -> None:
    n, rounds = int(sizes["peer_receipts"]), int(sizes["peer_rounds"])
    with tempfile.TemporaryDirectory(prefix="leo-bench-peer-") as tmp:
        work = Path(tmp)
        peer = prepare(env, n, work)
        variants = (("ours", 1), ("connect", 1), ("ours", 2), ("connect", 2))
        runs: dict[tuple[str, int], list[Run]] = {v: [] for v in variants}
        for r in range(1, rounds + 1):
            for kind, k in variants:
                run = peer.ours(k) if kind == "ours" else peer.connect(k)
                runs[kind, k].append(run)
                if run.rows != runs["ours", 1][0].rows:
                    raise AssertionError(f"{run.label} wrote other rows than ours: {run.rows}")
                report.add("peer", f"round {r}: {run.label}", f"{run.per_second:,.0f} msg/s",
                           _figures(run))  # fmt: skip
    facts: dict[str, Any] = {"receipts": n, "rounds": rounds}
    for k in (1, 2):
        ours, theirs = runs["ours", k], runs["connect", k]
        whole, half = _ratios(ours, theirs), _ratios(*(_halves(rs) for rs in (ours, theirs)))
        what = f"{k} process{'es' if k > 1 else ''} / {k} task{'s' if k > 1 else ''}"
        rate, cpu_ratio = whole["rate"], whole["consumer_cpu"]
        report.add(
            "peer",
            f"ours / Connect, msg/s, {what}",
            f"{rate:.2f}",
            f"median of {rounds}; target >= 1.5 {'OK' if rate >= 1.5 else 'BELOW TARGET'}; "
            f"second halves {half['rate']:.2f}",
        )
        report.add(
            "peer",
            f"ours / Connect, consumer CPU per msg, {what}",
            f"{cpu_ratio:.2f}",
            f"target < 1 {'OK' if cpu_ratio < 1 else 'BELOW TARGET'}; second halves "
            f"{half['consumer_cpu']:.2f}; PostgreSQL's {whole['pg_cpu']:.2f}",
        )
        facts[f"{k}"] = {
            "ours": [dataclasses.asdict(r) for r in ours],
            "connect": [dataclasses.asdict(r) for r in theirs],
            "ratios": whole,
            "second_half_ratios": half,
        }
    report.add("peer", "rows written: Connect's == ours", "yes", f"{n:,} rows, every run")
    report.facts["peer"] = facts
