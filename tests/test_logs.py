"""Logs: text on a terminal, JSON in a pipe; librdkafka's lines through Python logging, the same
line at most once every few seconds with a count of the repeats; consume's progress line."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from leo_activation import kafka_log, logs
from leo_activation.engine.progress import ProgressLog
from leo_activation.engine.stats import BatchStats
from leo_activation.kafka import admin_client
from leo_activation.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.ERROR, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("leo_activation.librdkafka", level, "", 0, message, None, None)
    rec.__dict__.update(extra)
    return rec


FAIL = "FAIL [rdkafka#producer-{n}] 127.0.0.1:1/bootstrap: Connect failed (after {ms}ms in state)"


def test_the_same_line_passes_once_per_interval_with_the_count_it_dropped() -> None:
    clock = Clock()
    limit = kafka_log.RateLimit(interval_s=5, clock=clock)
    passed = []
    for i in range(120):  # a line every 0.1 s for 12 s, from several clients, timings varying
        rec = record(FAIL.format(n=i % 3, ms=i % 7))
        if limit.filter(rec):
            passed.append((clock.now, getattr(rec, "suppressed", 0)))
        clock.now += 0.1
    assert [round(t - 1000, 1) for t, _ in passed] == [0.0, 5.0, 10.0]
    assert [n for _, n in passed] == [0, 49, 49]


def test_different_lines_and_levels_are_limited_apart() -> None:
    limit = kafka_log.RateLimit(interval_s=5, clock=Clock())
    assert limit.filter(record("a"))
    assert limit.filter(record("b"))
    assert limit.filter(record("a", level=logging.WARNING))
    assert not limit.filter(record("a"))


def test_every_client_config_carries_the_logger() -> None:
    config = kafka_log.with_logger({"bootstrap.servers": "x"})
    assert config["logger"] is kafka_log.LOGGER
    assert any(isinstance(f, kafka_log.RateLimit) for f in kafka_log.LOGGER.filters)


def test_a_closed_port_is_a_line_every_few_seconds(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    admin = admin_client(Settings(kafka_bootstrap=f"127.0.0.1:{port}"), wait=False)
    deadline = time.monotonic() + kafka_log.INTERVAL_S + 2
    with caplog.at_level(logging.INFO):
        while time.monotonic() < deadline:
            admin.poll(0.2)  # confluent-kafka hands the queued log lines over on poll
    lines = [r for r in caplog.records if r.name == "leo_activation.librdkafka"]
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]
    assert f"127.0.0.1:{port}" in lines[0].getMessage()
    assert lines[0].levelno == logging.ERROR
    assert any(getattr(r, "suppressed", 0) > 0 for r in lines[1:])


@pytest.fixture
def root_logger() -> Iterator[None]:
    """The root logger's handlers and level put back after a test that configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("log_format", "stream", "is_json"),
    [("auto", io.StringIO, True), ("auto", Terminal, False), ("json", Terminal, True),
     ("text", io.StringIO, False)],
)  # fmt: skip
def test_auto_is_text_on_a_terminal_and_json_elsewhere(
    log_format: str, stream: type[io.StringIO], is_json: bool, root_logger: None
) -> None:
    out = stream()
    logs.configure(log_format, "INFO", stream=out)
    logging.getLogger("leo_activation.x").info("hello %s", "you", extra={"n": 3})
    logging.getLogger("leo_activation.x").debug("not at INFO")
    line = out.getvalue().strip()
    assert len(line.splitlines()) == 1
    if is_json:
        assert json.loads(line)["message"] == "hello you"
        assert json.loads(line)["n"] == 3
    else:
        assert line.endswith("INFO    hello you  n=3")


def test_progress_line_every_interval_with_counts_rate_and_lag(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    progress = ProgressLog(30, lambda: [("commands", 0, 40), ("commands", 1, 2)], clock=clock)
    with caplog.at_level(logging.INFO, logger="leo_activation.consume"):
        for _ in range(4):  # 100 messages every 10 s: one line, at 30 s
            clock.now += 10
            progress.observe_batch(BatchStats(consumed=100, applied=99, dead_lettered=1))
        progress.tick()
    lines = [r for r in caplog.records if getattr(r, "event", None) == "progress"]
    assert len(lines) == 1
    fields = vars(lines[0])
    assert [fields[k] for k in ("consumed", "applied", "dead_lettered", "lag")] == [300, 297, 3, 42]
    assert fields["rate"] == 10.0
    assert "300 consumed, 297 applied, 3 dead-lettered since start; 10 msg/s; lag 42" in (
        lines[0].getMessage()
    )


def test_configure_replaces_only_its_own_handler(
    root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    logs.configure("json")
    logs.configure("text")
    handlers = logging.getLogger().handlers
    assert other in handlers
    assert len([h for h in handlers if h.get_name() == "leo_activation"]) == 1
    logging.getLogger("leo_activation.x").warning("to stderr as it is now")
    assert "WARNING to stderr as it is now" in capsys.readouterr().err
