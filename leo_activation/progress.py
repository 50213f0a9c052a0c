"""Progress of long work, drawn on stderr while stderr is a terminal; nothing at all otherwise.

A bar shows what is done of how much (``12,000/300,000 lines``), the rate and the time left; work
of unknown size shows a spinner and the time spent. ``LEO_PROGRESS=1`` draws it even when stderr
is not a terminal, ``LEO_PROGRESS=0`` never draws it. Results are not progress: each command still
prints its outcome as before, and the bar is erased when the work ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TypeVar

from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from leo_activation.engine.stats import BatchStats

ENV = "LEO_PROGRESS"
T = TypeVar("T")


def enabled() -> bool:
    """Whether progress is drawn: ``LEO_PROGRESS`` when it is 0 or 1, else stderr is a tty."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


class _Rate(ProgressColumn):
    """``1,234 lines/s`` (rich's own speed column is for bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        return Text("" if speed is None else f"{speed:,.0f} {unit}/s", style="progress.data.speed")


class Bar:
    """One task's bar; a silent one (``live`` false) when progress is off."""

    def __init__(self, progress: Progress | None = None, task: TaskID | None = None) -> None:
        self._progress = progress
        self._task = task

    @property
    def live(self) -> bool:
        return self._progress is not None

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=total)


@contextmanager
def bar(description: str, total: float | None = None, unit: str = "") -> Iterator[Bar]:
    """A bar for the block (a spinner while ``total`` is None), erased when the block ends."""
    if not enabled():
        yield Bar()
        return
    console = Console(stderr=True, force_terminal=True)
    counted: list[ProgressColumn] = []
    if total is not None or unit:  # a step of no countable size: a spinner and the time spent
        counted = [
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            _Rate(),
            TimeRemainingColumn(),
        ]
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        *counted,
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield Bar(progress, progress.add_task(description, total=total, unit=unit))


def track(
    items: Iterable[T], description: str, *, total: float | None = None, unit: str = ""
) -> Iterator[T]:
    """``items``, advancing a bar by one for each (``total`` defaults to their number)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with bar(description, total, unit) as b:
        for item in items:
            yield item
            b.advance()


def count_lines(path: str) -> int | None:
    """Lines in a regular file (a quick byte scan, for a bar's total); None for pipes and such."""
    if not os.path.isfile(path):  # a pipe's lines would be consumed by counting them
        return None
    try:
        with open(path, "rb") as stream:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
    except OSError:
        return None


class Drain:
    """An engine reading a backlog: messages read, the lag left, hence an ETA.

    ``on_batch`` is the engine's callback; ``lag`` its per-partition lag (``Engine.lag``), read
    after each batch, so the total is what was read plus what is left."""

    def __init__(self, b: Bar, lag: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self.bar = b
        self.lag_of = lag
        self.read = 0
        self.left = 0

    def on_batch(self, stats: BatchStats) -> None:
        self.read += stats.consumed
        # a rebalance or a broker blip: the lag read last time stands
        with contextlib.suppress(KafkaException):
            self.left = sum(lag for _topic, _partition, lag in self.lag_of())
        self.bar.update(completed=self.read, total=self.read + self.left)
