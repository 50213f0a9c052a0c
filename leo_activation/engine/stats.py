"""What a batch came to: every message read is accounted for exactly once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields


@dataclass
class Counts:
    """Messages by what became of them (a batch's, or one topic's share of it)."""

    consumed: int = 0  # distinct offsets read for the first time: a message read again is not
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deferred: int = 0  # left uncommitted, read and settled again later
    resumed: int = 0  # deferred before, read again and settled (or deferred) now

    def balanced(self) -> bool:
        """The accounting invariant: every consumed message is accounted for exactly once (over a
        run, the deferred ones are the ones resumed later)."""
        return self.consumed + self.resumed == (
            self.applied + self.duplicates + self.dead_lettered + self.deferred
        )

    def summary(self) -> str:
        return (
            f"consumed {self.consumed} messages: {self.applied} applied, "
            f"{self.duplicates} duplicates, {self.dead_lettered} dead-lettered"
        )

    def add(self, other: Counts) -> None:
        for f in fields(Counts):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class BatchStats(Counts):
    # read again behind a waiting offset though already settled: skipped, counted nowhere else
    reread: int = 0
    tenants: int = 0
    db_seconds: float = 0.0
    topics: dict[str, Counts] = field(default_factory=dict)  # per logical topic

    def topic(self, logical: str) -> Counts:
        """One logical topic's share of the batch."""
        return self.topics.setdefault(logical, Counts())

    def add(self, other: Counts) -> None:
        super().add(other)
        if isinstance(other, BatchStats):
            self.reread += other.reread
            self.tenants += other.tenants
            self.db_seconds += other.db_seconds
            for logical, counts in other.topics.items():
                self.topic(logical).add(counts)

    @classmethod
    def total(cls, batches: Iterable[BatchStats]) -> BatchStats:
        """The sum of several batches (a whole run)."""
        total = cls()
        for batch in batches:
            total.add(batch)
        return total
