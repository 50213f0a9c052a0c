"""The bench's peer (``python -m bench --peer connect``) compares like with like: Kafka Connect
with the Debezium JDBC sink, fed the same receipts, leaves exactly the rows the product's own
``consume`` leaves, so its rate and CPU figures are for the same work done."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import peer
from bench.env import BenchEnv
from leo_activation.dev.stack import Endpoints

pytestmark = pytest.mark.slow

RECEIPTS = 3_000


def test_connect_writes_the_rows_the_product_writes(stack: Endpoints, tmp_path: Path) -> None:
    env = BenchEnv(stack)
    try:
        setup = peer.prepare(env, RECEIPTS, tmp_path)
        ours = setup.ours(1)
        theirs = setup.connect(1)
    finally:
        env.cleanup()
    assert ours.rows[0] == RECEIPTS
    assert theirs.rows == ours.rows
