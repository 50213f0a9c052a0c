"""pytest plugin: a three-node KRaft cluster (``leo_activation.dev.cluster``) for the cluster
fault battery.

``kafka_cluster`` (session) starts a fresh cluster in ``<repo>/.dev/test-cluster`` from the local
stack's cached Kafka jars (the session's PostgreSQL is shared; this is only Kafka), with the
production durability README's *Deploy* asks for, and stops it at session end.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from leo_activation.dev.cluster import Cluster

CLUSTER_HOME = Path(__file__).resolve().parent.parent / ".dev" / "test-cluster"


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[Cluster]:
    cluster = Cluster(CLUSTER_HOME)
    cluster.down()  # one a killed session left running
    shutil.rmtree(CLUSTER_HOME, ignore_errors=True)  # no topics or groups of an earlier run
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
