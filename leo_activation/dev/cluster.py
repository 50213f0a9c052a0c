"""A local three-node KRaft cluster with production durability, for the cluster fault battery.

Each node is a combined broker and controller (three voters: any one can be lost and the quorum
stays), started from the same cached Kafka jars as the local stack's broker, on 127.0.0.1 ports
kept in ``<home>/state.json``. The cluster is set up as README's *Deploy* asks of a production
one: replication 3 and ``min.insync.replicas`` 2 for topics and the transaction state log,
offsets replicated 3 times, no unclean leader election. A node can be SIGKILLed and started again
on its own data (``kill``, ``start``); ``whole`` says when every replica is back in sync.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from leo_activation.dev.stack import (
    _alive,
    _free_port,
    _internal_topics,
    _launch_kafka,
    _locked,
    _new_cluster_id,
    _port_open,
    _stop_processes,
    _tail,
    _write_log4j,
)
from leo_activation.errors import LeoError
from leo_activation.kafka import admin_client
from leo_activation.settings import Settings

NODES = 3
REPLICAS = 3
MIN_INSYNC_REPLICAS = 2
# A node started again after a SIGKILL first recovers every log it holds; on a loaded two-core
# machine that, and the JVM's start, can take more than a minute.
START_TIMEOUT_S = 300.0


@dataclass
class _Node:
    node_id: int
    broker_port: int
    controller_port: int
    pid: int | None = None


@dataclass
class _State:
    cluster_id: str
    nodes: list[_Node]


class Cluster:
    """The cluster whose nodes live in ``home/node-<id>``; nothing runs until ``up``."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self._state_file = self.home / "state.json"

    # ------------------------------------------------------------------ state
    def _load(self) -> _State | None:
        try:
            raw = json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return _State(raw["cluster_id"], [_Node(**node) for node in raw["nodes"]])

    def _save(self, state: _State) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
        tmp.replace(self._state_file)

    def _state(self) -> _State:
        state = self._load()
        if state is None:
            nodes = [_Node(n, _free_port(), _free_port()) for n in range(1, NODES + 1)]
            state = _State(_new_cluster_id(), nodes)
            self._save(state)
        return state

    def _folder(self, node_id: int) -> Path:
        return self.home / f"node-{node_id}"

    def _properties(self, node_id: int) -> Path:
        return self._folder(node_id) / "server.properties"

    def _running(self, node: _Node) -> bool:
        return _alive(node.pid, str(self._properties(node.node_id)))

    # ------------------------------------------------------------------ addresses
    @property
    def bootstrap(self) -> str:
        """Every node's broker address: a client reaches the cluster while any one is up."""
        return ",".join(f"127.0.0.1:{node.broker_port}" for node in self._state().nodes)

    @property
    def node_ids(self) -> list[int]:
        return [node.node_id for node in self._state().nodes]

    def log(self, node_id: int) -> Path:
        return self._folder(node_id) / "server.log"

    def _node(self, state: _State, node_id: int) -> _Node:
        for node in state.nodes:
            if node.node_id == node_id:
                return node
        raise LeoError(f"the cluster in {self.home} has no node {node_id}")

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> str:
        """Start every node not running and wait until each one is a broker of the cluster;
        returns the bootstrap servers."""
        with _locked(self.home / ".lock"):
            state = self._state()
            for node in state.nodes:
                if not self._running(node):
                    self._launch(state, node)
            self._save(state)
        self._wait_brokers(set(self.node_ids))
        return self.bootstrap

    def start(self, node_id: int) -> None:
        """Start one node again on its data (after ``kill``); returns once it is a broker of
        the cluster again (its replicas may still be catching up: see ``whole``)."""
        with _locked(self.home / ".lock"):
            state = self._state()
            node = self._node(state, node_id)
            if not self._running(node):
                self._launch(state, node)
                self._save(state)
        self._wait_brokers({node_id})

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (broker and controller at once), as a crash or a lost host would."""
        with _locked(self.home / ".lock"):
            state = self._state()
            node = self._node(state, node_id)
            if node.pid is not None:
                marker = str(self._properties(node_id))
                _stop_processes({node.pid: marker}, signal.SIGKILL, timeout=10)
            node.pid = None
            self._save(state)

    def down(self) -> None:
        """Stop every node (SIGTERM to all at once; SIGKILL after 30 s: the last ones to stop
        have no quorum left to shut down cleanly with)."""
        if not self._state_file.is_file():
            return
        with _locked(self.home / ".lock"):
            state = self._state()
            processes = {
                node.pid: str(self._properties(node.node_id))
                for node in state.nodes
                if node.pid is not None
            }
            _stop_processes(processes, timeout=30)
            for node in state.nodes:
                node.pid = None
            self._save(state)

    def _launch(self, state: _State, node: _Node) -> None:
        folder = self._folder(node.node_id)
        data = folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in state.nodes)
        broker = f"PLAINTEXT://127.0.0.1:{node.broker_port}"
        self._properties(node.node_id).write_text(
            f"""# Written by leo_activation.dev.cluster on every start; edits are overwritten.
process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={voters}
listeners={broker},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners={broker}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
default.replication.factor={REPLICAS}
min.insync.replicas={MIN_INSYNC_REPLICAS}
unclean.leader.election.enable=false
{_internal_topics(data, replicas=REPLICAS, min_isr=MIN_INSYNC_REPLICAS)}""",
            encoding="utf-8",
        )
        _write_log4j(folder, folder / "server.log")
        node.pid = _launch_kafka(
            self._properties(node.node_id), data, folder / "console.log", state.cluster_id
        )

    # ------------------------------------------------------------------ readiness
    def _admin_settings(self) -> Settings:
        return Settings(kafka_bootstrap=self.bootstrap)

    def _wait_brokers(self, wanted: set[int]) -> None:
        """Until every node of ``wanted`` listens and is a live broker in the cluster's metadata
        (right after a kill, the metadata may still name the dead process: the listener is the
        new one's)."""
        admin = admin_client(self._admin_settings(), wait=False)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            state = self._state()
            nodes = [self._node(state, node_id) for node_id in sorted(wanted)]
            for node in nodes:
                if not self._running(node):
                    console = self._folder(node.node_id) / "console.log"
                    raise LeoError(
                        f"Kafka node {node.node_id} exited while starting: {_tail(console)} "
                        f"(see {self.log(node.node_id)})"
                    )
            if all(_port_open(node.broker_port) for node in nodes):
                with contextlib.suppress(KafkaException):
                    if wanted <= set(admin.list_topics(timeout=2).brokers):
                        return
            time.sleep(0.5)
        raise LeoError(f"Kafka nodes {sorted(wanted)} did not join within {START_TIMEOUT_S:.0f}s")

    def whole(self, timeout: float = START_TIMEOUT_S) -> float:
        """Wait until every node is a broker and every partition (internal ones included) has
        a leader and all its replicas in sync; returns the seconds it took. A node killed again
        before that could leave a partition with fewer in-sync replicas than
        ``min.insync.replicas``, which is the loss of two brokers, not one."""
        admin = admin_client(self._admin_settings(), wait=False)
        started = time.monotonic()
        lagging = "no metadata"
        while time.monotonic() - started < timeout:
            try:
                metadata = admin.list_topics(timeout=5)
            except KafkaException as exc:
                lagging = str(exc)
            else:
                behind = [
                    f"{topic}/{p}"
                    for topic, t in metadata.topics.items()
                    for p, part in t.partitions.items()
                    if part.leader < 0 or set(part.isrs) != set(part.replicas)
                ]
                if set(metadata.brokers) == set(self.node_ids) and not behind:
                    return time.monotonic() - started
                lagging = f"{len(metadata.brokers)} brokers; out of sync: {behind[:5]}"
            time.sleep(0.5)
        raise LeoError(f"the cluster was not whole again within {timeout:.0f}s: {lagging}")
