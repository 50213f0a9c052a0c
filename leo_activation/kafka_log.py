"""librdkafka's own log, routed through Python logging and rate-limited.

Left to itself librdkafka writes ``%3|…|FAIL|…`` lines straight to stderr, one per connection
attempt and client: a broker on a closed port printed hundreds before the one line that says what
is wrong. Every client gets ``logger`` (confluent-kafka's hook, served on poll), so its lines are
records of the ``leo_activation.librdkafka`` logger in the process's own format, and a filter on
that logger lets the same line through at most once every ``INTERVAL_S``, counting the repeats
it dropped (``suppressed`` on the next one let through).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

INTERVAL_S = 5.0
# distinct lines remembered; past this the oldest are forgotten (a forgotten line that comes
# back is simply let through again)
_MAX_KEYS = 1024
# what varies between repeats of one librdkafka line: its client's name (rdkafka#producer-7),
# the time spent in a state, and librdkafka's own "N identical error(s) suppressed"
_VARYING = re.compile(r"rdkafka#\w+-\d+|after \d+ms|\d+ identical error\(s\) suppressed")


class RateLimit(logging.Filter):
    """The same message at most once every ``interval_s``; the next one let through carries
    ``suppressed`` (how many were dropped since)."""

    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (last let through, dropped since)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.levelno}:{_VARYING.sub('', record.getMessage())}"
        now = self.clock()
        with self._lock:
            last, dropped = self._seen.pop(key, (None, 0))
            if last is not None and now - last < self.interval_s:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            while len(self._seen) > _MAX_KEYS:
                del self._seen[next(iter(self._seen))]
        if dropped:
            record.suppressed = dropped
        return True


LOGGER = logging.getLogger("leo_activation.librdkafka")
LOGGER.addFilter(RateLimit())


def with_logger(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a confluent-kafka client, its log going to ``LOGGER``."""
    return {**config, "logger": LOGGER}
