"""``consume``'s periodic progress line: what it did since start, how fast, how far behind."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaException

from leo_activation.engine.stats import BatchStats

log = logging.getLogger("leo_activation.consume")

Lag = Callable[[], Iterable[tuple[str, int, int]]]


class ProgressLog:
    """Counts batches; at most every ``interval_s`` (checked after each batch and each empty
    poll) logs one ``event="progress"`` line: consumed / applied / dead-lettered since start,
    the rate since the previous line, and the lag summed over the assigned partitions."""

    def __init__(
        self, interval_s: float, lag: Lag, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.lag = lag
        self.clock = clock
        self.total = BatchStats()
        self._last_at = clock()
        self._last_consumed = 0

    def observe_batch(self, stats: BatchStats) -> None:
        self.total.add(stats)
        self.tick()

    def tick(self) -> None:
        now = self.clock()
        if now - self._last_at < self.interval_s:
            return
        rate = (self.total.consumed - self._last_consumed) / (now - self._last_at)
        self._last_at, self._last_consumed = now, self.total.consumed
        lag = self._lag()
        log.info(
            "progress: %d consumed, %d applied, %d dead-lettered since start; %.0f msg/s; lag %s",
            self.total.consumed,
            self.total.applied,
            self.total.dead_lettered,
            rate,
            "unknown" if lag is None else lag,
            extra={
                "event": "progress",
                "consumed": self.total.consumed,
                "applied": self.total.applied,
                "dead_lettered": self.total.dead_lettered,
                "rate": round(rate, 1),
                "lag": lag,
            },
        )

    def _lag(self) -> int | None:
        try:
            lags = [lag for _, _, lag in self.lag()]
        except KafkaException:  # a rebalance or a broker blip: unknown this time
            return None
        return sum(lags) if lags else None
