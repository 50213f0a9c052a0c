"""``leo-activation verify``: prove the live database is the projection of the topics.

1. create a scratch database on the same server (admin DSN) and ``migrate`` it;
2. run the engine into it with a consumer group of its own from offset 0 until idle: the
   commands topic first (tenant registrations must precede their tenants' messages, which the
   engine would otherwise dead-letter), then every input topic; its outputs (dead letters,
   delivery requests) go to scratch topics (``Settings.output_prefix``), never the live ones;
3. compare, tenant by tenant and table by table, the canonical digests (``digest.py``) of the
   live database with the rebuild; at the first differing table, walk both tables in key order
   and name the first key whose row differs or exists on one side only;
4. drop the scratch database, topics and group, whatever happened: also when SIGTERM, SIGHUP or
   SIGINT stops it (the process then ends by that signal, after the clean-up).

While the rebuild runs it logs its progress (messages re-read, lag left; a bar on a terminal),
and the dead letters it meets are summed up at the end (counts by error class, a few examples)
instead of one line each: a topic with many poison messages would otherwise flood the log.

The consumer groups' committed offsets say whether the comparison is fair: a rebuild that
stopped before the live group's offsets is an error (raise ``--idle``); a live group behind the
rebuild means the live consumers lag, and a difference may be that lag rather than damage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException
from psycopg import sql

from leo_activation import db, ids, progress
from leo_activation.consumers import HANDLERS
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.errors import LeoError, UsageError, reported
from leo_activation.kafka import INPUT_TOPICS, admin_client, committed_offsets, topic_partitions
from leo_activation.migrate import migrate
from leo_activation.ops.digest import StateTable, combine, list_tenants, row_texts, state_tables
from leo_activation.ops.digest import tenant_digest as table_digests
from leo_activation.resources import sql_text
from leo_activation.settings import Settings

log = logging.getLogger("leo_activation.ops.verify")
# the engine logs each dead letter here; verify sums them up instead
ENGINE_LOGGER = "leo_activation.engine.loop"
DEAD_LETTER_EXAMPLES = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@dataclass(frozen=True)
class Difference:
    tenant_id: uuid.UUID
    table: str
    key_columns: tuple[str, ...]
    key: str  # the key's row text, e.g. (7f0c…,3)
    kind: str  # "differs" | "only in the live database" | "missing from the live database"
    live: str | None = None
    rebuilt: str | None = None

    def describe(self) -> str:
        return (
            f"tenant {self.tenant_id}, table {self.table}, "
            f"key ({', '.join(self.key_columns)})={self.key}: {self.kind}"
        )


@dataclass(frozen=True)
class Outcome:
    digest: str | None  # the verified digest, when the states are equal
    difference: Difference | None
    notes: list[str]


# ---------------------------------------------------------------------- comparing two databases
def first_difference(
    live: psycopg.Connection[Any],
    rebuilt: psycopg.Connection[Any],
    tenant: uuid.UUID,
    table: StateTable,
) -> Difference | None:
    """Walk one tenant's rows of ``table`` in key order on both sides; the first mismatch."""

    def found(key: str, kind: str, a: str | None = None, b: str | None = None) -> Difference:
        return Difference(tenant, table.name, table.key_columns, key, kind, a, b)

    with (
        _reading(live, tenant),
        _reading(rebuilt, tenant),
        row_texts(live, table, tenant) as ours,
        row_texts(rebuilt, table, tenant) as theirs,
    ):
        live_rows, rebuilt_rows = iter(ours), iter(theirs)  # fetched itersize rows at a time
        a, b = next(live_rows, None), next(rebuilt_rows, None)
        while a is not None or b is not None:
            if a is not None and b is not None and a[0] == b[0]:
                if a[1] != b[1]:
                    return found(a[0], "differs from the rebuild", a[1], b[1])
                a, b = next(live_rows, None), next(rebuilt_rows, None)
                continue
            # Everything before matched, so the smaller key is the one the other side lacks.
            if a is not None and (
                b is None or _key_before(live, rebuilt, table, tenant, keys=(a[0], b[0]))
            ):
                return found(a[0], "only in the live database (no message made it)", a[1])
            assert b is not None
            return found(b[0], "missing from the live database", None, b[1])
    return None


@contextlib.contextmanager
def _reading(conn: psycopg.Connection[Any], tenant: uuid.UUID) -> Iterator[None]:
    with db.tenant_transaction(conn, tenant):
        # the same text forms as digest.tenant_digest
        conn.execute(sql_text("queries/ops/canonical_text_settings.sql"))
        yield


def _typed_key(
    conn: psycopg.Connection[Any], table: StateTable, tenant: uuid.UUID, key_text: str
) -> tuple[Any, ...]:
    columns = sql.SQL(", ").join(map(sql.Identifier, table.key_columns))
    query = sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s AND (ROW({}))::text = %s").format(
        columns, sql.Identifier(table.name), columns
    )
    row = conn.execute(query, (tenant, key_text)).fetchone()
    if row is None:
        raise LeoError(f"{table.name}: key {key_text} vanished while verifying")
    return tuple(row)


def _key_before(
    live: psycopg.Connection[Any],
    rebuilt: psycopg.Connection[Any],
    table: StateTable,
    tenant: uuid.UUID,
    *,
    keys: tuple[str, str],
) -> bool:
    """Whether ``keys[0]`` (live) sorts before ``keys[1]`` (rebuilt) in key order (asked of
    PostgreSQL with the typed key values, so the order is the one ``ORDER BY`` used)."""
    a = _typed_key(live, table, tenant, keys[0])
    b = _typed_key(rebuilt, table, tenant, keys[1])
    marks = sql.SQL(", ").join(sql.Placeholder() * len(a))
    query = sql.SQL("SELECT ROW({}) < ROW({})").format(marks, marks)
    row = live.execute(query, (*a, *b)).fetchone()
    return bool(row and row[0])


def compare(
    live_dsn: str, rebuilt_dsn: str, tenant: uuid.UUID | None = None
) -> tuple[str | None, Difference | None]:
    """(digest, None) when both databases hold the same state, else (None, first difference).
    Both DSNs need a role that reads every tenant; the digest is ``leo-activation digest``'s."""
    tenants = (
        [tenant]
        if tenant is not None
        else sorted(set(list_tenants(live_dsn)) | set(list_tenants(rebuilt_dsn)))
    )
    parts: dict[str, str] = {}
    with db.connect(live_dsn) as live, db.connect(rebuilt_dsn) as rebuilt:
        for t in tenants:
            ours, theirs = table_digests(live, t), table_digests(rebuilt, t)
            if ours != theirs:
                tables = {x.name: x for x in state_tables(rebuilt)}
                for name in sorted(set(ours) | set(theirs)):
                    if ours.get(name) == theirs.get(name):
                        continue
                    if name not in tables or name not in ours:
                        kind = "table missing from the live database"
                        if name not in tables:
                            kind = "table only in the live database"
                        return None, Difference(t, name, (), "", kind)
                    diff = first_difference(live, rebuilt, t, tables[name])
                    if diff is not None:
                        return None, diff
                raise LeoError(f"tenant {t}: digests differ but no row does (concurrent change?)")
            parts[str(t)] = combine(ours)
    if tenant is not None:
        return parts[str(tenant)], None
    return combine(parts), None


# ---------------------------------------------------------------------- the scratch rebuild
def _offsets(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    admin = admin_client(settings)
    offsets: dict[tuple[str, int], int] = {}
    for logical in INPUT_TOPICS:
        physical = settings.topic(logical)
        partitions = topic_partitions(admin, physical)
        for p, offset in committed_offsets(admin, group, physical, partitions).items():
            offsets[(logical, p)] = offset or 0
    return offsets


def _fairness(live: dict[tuple[str, int], int], rebuilt: dict[tuple[str, int], int]) -> list[str]:
    """Raises if the rebuild stopped short of the live group; notes if the live group lags."""
    short = {k: (v, rebuilt.get(k, 0)) for k, v in live.items() if rebuilt.get(k, 0) < v}
    if short:
        (topic, p), (want, got) = min(short.items())
        raise LeoError(
            f"the rebuild stopped at {topic}/{p} offset {got}, before the live group's {want}; "
            "run verify again with a larger --idle"
        )
    lag = sum(v - live.get(k, 0) for k, v in rebuilt.items() if v > live.get(k, 0))
    if lag:
        return [
            f"the live consumers are {lag} offsets behind the topics: a difference may be "
            "that lag; verify again once they caught up"
        ]
    return []


def _schema_matches(live_dsn: str, scratch_dsn: str) -> None:
    def applied(dsn: str) -> list[tuple[str, str]]:
        with db.connect(dsn) as conn:
            rows = conn.execute(sql_text("queries/ops/applied_migrations.sql")).fetchall()
            return [(str(name), str(checksum)) for name, checksum in rows]

    if applied(live_dsn) != applied(scratch_dsn):
        raise LeoError("the live database is not at this version's schema: run migrate first")


class Stopped(Exception):
    """A stop signal arrived; raised in the main thread so every ``finally`` runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT raise ``Stopped`` once; a second one while cleaning up is
    ignored, so the clean-up itself is not cut short."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass
class DeadLetterTally(logging.Filter):
    """Counts the engine's dead-letter log records by error class, keeps a few, drops them all."""

    by_class: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event", None) != "dead_letter":
            return True
        self.by_class[str(getattr(record, "error_class", "?"))] += 1
        if len(self.examples) < DEAD_LETTER_EXAMPLES:
            self.examples.append(record.getMessage())
        return False

    def summary(self) -> str | None:
        total = sum(self.by_class.values())
        if not total:
            return None
        classes = ", ".join(f"{n} {k}" for k, n in self.by_class.most_common())
        return f"the rebuild dead-lettered {total} messages ({classes}); e.g. " + "; ".join(
            self.examples
        )


class RebuildProgress:
    """The rebuild's progress: a bar on a terminal, a log line every ``every_s`` and at the end."""

    def __init__(self, drain: progress.Drain, every_s: float) -> None:
        self.drain = drain
        self.every_s = every_s
        self.started = self.logged = time.monotonic()

    def on_batch(self, stats: BatchStats) -> None:
        self.drain.on_batch(stats)
        if time.monotonic() - self.logged >= self.every_s:
            self.log()

    def log(self) -> None:
        self.logged = time.monotonic()
        d = self.drain
        rate = d.read / max(self.logged - self.started, 1e-3)
        eta = d.left / rate if rate else None
        log.info(
            "verify: re-read %d messages, %d left to read (%.0f/s, about %s left)",
            d.read, d.left, rate, "?" if eta is None else f"{eta:.0f}s",
            extra={"event": "verify_progress", "reread": d.read, "lag": d.left, "eta_s": eta},
        )  # fmt: skip


def _rebuild(rebuild: Settings, group: str, idle: float) -> None:
    """Run the engine into the scratch database until idle, with progress and one dead-letter
    summary instead of the engine's line per dead letter."""
    tally = DeadLetterTally()
    engine_log = logging.getLogger(ENGINE_LOGGER)
    engine_log.addFilter(tally)
    try:
        with progress.bar("verify: re-reading", unit="messages") as b:
            engine = Engine(rebuild, HANDLERS, group=group)
            shown = RebuildProgress(progress.Drain(b, engine.lag), rebuild.progress_interval_s)
            engine.on_batch = shown.on_batch
            engine.run(until_idle=idle)
        shown.log()
    finally:
        engine_log.removeFilter(tally)
        summary = tally.summary()
        if summary is not None:
            log.info(
                "%s", summary,
                extra={"event": "verify_dead_letters", "by_class": dict(tally.by_class)},
            )  # fmt: skip


def verify(
    settings: Settings,
    *,
    live_group: str,
    tenant: uuid.UUID | None = None,
    idle: float = 5.0,
) -> Outcome:
    admin_dsn, app_dsn = settings.require_admin_database(), settings.require_database()
    admin = admin_client(settings)
    for logical in INPUT_TOPICS:
        topic_partitions(admin, settings.topic(logical))  # nothing to rebuild from: exit 2
    suffix = uuid.uuid4().hex[:12]
    scratch = f"leo_verify_{suffix}"
    group = f"leo-verify-{suffix}"
    output_prefix = f"{settings.topic_prefix}verify-{suffix}."
    scratch_admin = db.with_database(admin_dsn, scratch)
    created: str | None = None
    try:
        with db.connect(admin_dsn, autocommit=True) as conn:
            # named as created before the statement: a signal may end it after the server did
            created = scratch
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        migrate(scratch_admin, db.with_database(app_dsn, scratch))
        _schema_matches(admin_dsn, scratch_admin)
        rebuild = settings.with_overrides(
            database_url=db.with_database(app_dsn, scratch),
            admin_database_url=scratch_admin,
            output_prefix=output_prefix,
        )
        # One run over every input topic: traffic whose tenant registration is still unread
        # waits for it (the consumers' tenancy gate), so the read order does not matter.
        _rebuild(rebuild, group, idle)
        notes = _fairness(_offsets(settings, live_group), _offsets(settings, group))
        digest, difference = compare(admin_dsn, scratch_admin, tenant)
        return Outcome(digest, difference, notes)
    finally:
        _cleanup(settings, admin_dsn, created, group, output_prefix)


def _cleanup(
    settings: Settings, admin_dsn: str, scratch: str | None, group: str, prefix: str
) -> None:
    """Drop what a run made; ``scratch`` is None when its database was never created."""
    if scratch is not None:
        try:
            with db.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(scratch)
                    )
                )
        except psycopg.Error as exc:
            log.warning("could not drop the scratch database %s: %s", scratch, exc)
    admin = admin_client(settings)
    try:
        topics = [t for t in admin.list_topics(timeout=15).topics if t.startswith(prefix)]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                future.result()
        for future in admin.delete_consumer_groups([group], request_timeout=30).values():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                # stopped before the rebuild committed anything: the group never existed
                if not (
                    isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND
                ):
                    raise
    except KafkaException as exc:
        log.warning("could not delete the scratch topics %s* or group %s: %s", prefix, group, exc)


def cli_verify(settings: Settings, args: Any) -> int:
    tenant = ids.parse(args.tenant, "--tenant") if args.tenant else None
    if args.idle <= 0:
        raise UsageError("--idle must be more than 0 seconds")
    settings.require_kafka()
    if settings.log_level is None:
        # a long command's own progress and dead-letter summary are what its user waits for;
        # the engine's line per batch stays at the command-line default (warnings)
        log.setLevel(logging.INFO)
    try:
        with _stopped_by_signals(), reported("verify"):
            outcome = verify(
                settings, live_group=args.group or settings.group_id, tenant=tenant, idle=args.idle
            )
    except Stopped as stop:
        print(
            f"leo-activation: verify stopped by {stop}; its scratch database, topics and group "
            "were removed",
            file=sys.stderr,
        )
        sys.stderr.flush()
        # end by the signal itself, so a supervisor sees what stopped it (exit 128 + signal)
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        raise  # not reached: the default action of these signals ends the process
    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    diff = outcome.difference
    if diff is not None:
        print(f"first difference: {diff.describe()}")
        if diff.live is not None:
            print(f"  live:    {diff.live}")
        if diff.rebuilt is not None:
            print(f"  rebuilt: {diff.rebuilt}")
        raise LeoError(f"state differs from the topics: {diff.describe()}")
    print(f"state verified: {outcome.digest}")
    return 0
