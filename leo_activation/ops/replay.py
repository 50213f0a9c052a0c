"""``leo-activation replay``: rewind a consumer group's committed offsets on one topic.

The database is a projection of the topics and every handler is idempotent, so moving a group
back only re-applies messages: already applied ones count as duplicates, the rest fill the gaps.
Used to recover from a lost or restored database (rewind every input topic to 0, then consume)
or to re-run a time window after a fix.

The group must have no active members: a running consumer would overwrite the new offsets with
its own at its next commit (and the broker refuses the change anyway). ``--dry-run`` shows, per
partition, the committed offset, the new one and how many offsets would be read again, and
changes nothing. Offsets beyond the end of a partition clamp to the end (and below its start to
the start). Counts are offset spans: with transactional producers they include the commit
markers, so they are an upper bound on messages.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from leo_activation import progress
from leo_activation.errors import LeoError, UsageError
from leo_activation.kafka import (
    ADMIN_TIMEOUT_S,
    admin_client,
    committed_offsets,
    metadata_consumer,
    topic_partitions,
)
from leo_activation.settings import Settings


@dataclass(frozen=True)
class PartitionPlan:
    partition: int
    low: int
    high: int
    committed: int | None  # None: the group has no offset for this partition yet
    new: int
    before_to_time: int | None  # offsets between ``new`` and --to-time, when given

    @property
    def to_reprocess(self) -> int:
        return max(0, self.high - self.new)


def parse_time(text: str, flag: str) -> int:
    """ISO-8601 -> epoch milliseconds (a time without a zone is UTC); UsageError otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def active_members(admin: AdminClient, group: str) -> list[str]:
    """``client_id@host`` of every member the group has now (empty if it has none or is new)."""
    future = admin.describe_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)[group]
    try:
        description = future.result()
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return []
        raise LeoError(f"cannot describe group {group}: {exc}") from exc
    return [f"{m.client_id}@{m.host}" for m in description.members or []]


def _offsets_at(
    consumer: Consumer, physical: str, partitions: list[int], at_ms: int, highs: dict[int, int]
) -> dict[int, int]:
    """First offset at or after ``at_ms`` per partition (the end where nothing is that late)."""
    query = [TopicPartition(physical, p, at_ms) for p in partitions]
    try:
        found = consumer.offsets_for_times(query, timeout=ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        raise LeoError(f"cannot look up offsets by time: {exc}") from exc
    return {tp.partition: highs[tp.partition] if tp.offset < 0 else tp.offset for tp in found}


def plan(
    settings: Settings,
    group: str,
    physical: str,
    *,
    from_offset: int | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[PartitionPlan]:
    """Where each partition of ``physical`` would move for ``group`` (changes nothing)."""
    admin = admin_client(settings)
    partitions = topic_partitions(admin, physical)
    committed = committed_offsets(admin, group, physical, partitions)
    consumer = metadata_consumer(settings)
    try:
        marks: dict[int, tuple[int, int]] = {}
        for p in progress.track(partitions, f"{physical}: watermarks", unit="partitions"):
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(physical, p), timeout=ADMIN_TIMEOUT_S
                )
            except KafkaException as exc:
                raise LeoError(f"cannot read the watermarks of {physical}/{p}: {exc}") from exc
            marks[p] = (int(low), int(high))
        highs = {p: high for p, (_low, high) in marks.items()}
        if from_ms is not None:
            targets = _offsets_at(consumer, physical, partitions, from_ms, highs)
        else:
            targets = dict.fromkeys(partitions, from_offset or 0)
        ends = None if to_ms is None else _offsets_at(consumer, physical, partitions, to_ms, highs)
    finally:
        consumer.close()
    plans = []
    for p in partitions:
        low, high = marks[p]
        new = min(max(targets[p], low), high)
        before = None if ends is None else max(0, min(ends[p], high) - new)
        plans.append(PartitionPlan(p, low, high, committed.get(p), new, before))
    return plans


def rewind(admin: AdminClient, group: str, physical: str, plans: list[PartitionPlan]) -> None:
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(physical, pp.partition, pp.new) for pp in plans]
    )
    future = admin.alter_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)[group]
    try:
        result = future.result()
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() in (
            KafkaError.UNKNOWN_MEMBER_ID,
            KafkaError.REBALANCE_IN_PROGRESS,
        ):
            raise LeoError(
                f"group {group} got an active member meanwhile; stop its consumers and retry"
            ) from exc
        raise LeoError(f"cannot rewind group {group}: {exc}") from exc
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise LeoError(f"cannot rewind {physical}/{failed[0].partition}: {failed[0].error}")


def render(group: str, physical: str, plans: list[PartitionPlan], with_to_time: bool) -> str:
    header = ["partition", "committed", "->", "new", "to reprocess"]
    if with_to_time:
        header.append("before --to-time")
    rows = [header]
    for pp in plans:
        row = [
            str(pp.partition),
            "none" if pp.committed is None else str(pp.committed),
            "->",
            str(pp.new),
            str(pp.to_reprocess),
        ]
        if with_to_time:
            row.append(str(pp.before_to_time))
        rows.append(row)
    total = ["total", "", "", "", str(sum(pp.to_reprocess for pp in plans))]
    if with_to_time:
        total.append(str(sum(pp.before_to_time or 0 for pp in plans)))
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"group {group}, topic {physical}"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def cli_replay(settings: Settings, args: Any) -> int:
    physical = settings.resolve_topic(args.topic)
    from_ms = parse_time(args.from_time, "--from-time") if args.from_time else None
    to_ms = parse_time(args.to_time, "--to-time") if args.to_time else None
    if args.from_offset is not None and args.from_offset < 0:
        raise UsageError("--from-offset must be 0 or more")
    if from_ms is not None and to_ms is not None and to_ms < from_ms:
        raise UsageError(f"--to-time {args.to_time} is before --from-time {args.from_time}")
    admin = admin_client(settings)
    topic_partitions(admin, physical)  # unknown topic: exit 2 before anything else
    members = active_members(admin, args.group)
    if members and not args.dry_run:
        raise LeoError(
            f"group {args.group} has {len(members)} active member(s) ({', '.join(members)}); "
            "stop its consumers first, then replay"
        )
    plans = plan(
        settings, args.group, physical, from_offset=args.from_offset, from_ms=from_ms, to_ms=to_ms
    )
    if all(pp.committed is None for pp in plans):
        # Rewinding a group that never consumed is legitimate (seeding offsets) but more often
        # a mistyped group name, which would leave the real group where it was.
        print(
            f"leo-activation: warning: group {args.group} has no committed offsets on {physical}; "
            "check the group name (`consume` logs it in its start line)",
            file=sys.stderr,
        )
    print(render(args.group, physical, plans, to_ms is not None))
    if args.dry_run:
        note = f" (group has {len(members)} active member(s): stop them first)" if members else ""
        total = sum(pp.to_reprocess for pp in plans)
        print(
            f"dry run: nothing changed; a replay would re-read up to {total} offsets on "
            f"{len(plans)} partitions{note}"
        )
        return 0
    rewind(admin, args.group, physical, plans)
    print(f"rewound group {args.group} on {physical}")
    print(
        f"next: start the consumers with `leo-activation consume --group {args.group}`; each "
        'batch logs one JSON line ("event": "batch", with its counts) and, with '
        "--metrics-port, leo_consumer_lag shows what is left per partition"
    )
    return 0
