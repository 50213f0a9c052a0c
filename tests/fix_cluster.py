"""pytest plugin: a three-node KRaft cluster (``leo_activation.dev.cluster``) for the cluster
fault battery.

``kafka_cluster`` (module) starts a fresh cluster in ``<repo>/.dev/test-cluster`` from the local
stack's cached Kafka jars (the session's PostgreSQL is shared; this is only Kafka), with the
production durability README's *Deploy* asks for, and stops it once the module's tests are done
(three idle brokers would otherwise share the machine with the rest of the suite).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from leo_activation.dev.cluster import Cluster

CLUSTER_HOME = Path(__file__).resolve().parent.parent / ".dev" / "test-cluster"


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[Cluster]:
    cluster = Cluster(CLUSTER_HOME)
    cluster.down()  # one a killed session left running
    shutil.rmtree(CLUSTER_HOME, ignore_errors=True)  # no topics or groups of an earlier run
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
