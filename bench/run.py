"""``python -m bench``: the performance targets measured side by side in one run on one machine.

Every figure that is compared is measured in the same run on the same rows: machines are noisy,
so read the ratios, not the absolute numbers across runs. Sizes come from flags or ``LEO_BENCH_*``
variables; ``--full`` uses the sizes the targets are stated for (a million messages, a
million-member snapshot); docs/performance.md lists the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import conninfo

from bench import gen, naive
from bench.env import BenchEnv
from bench.gateway import bench_gateway
from bench.measure import (
    CopyLoad,
    Rate,
    consume_env,
    copy_rate,
    decode_only_rate,
    engine_rate,
    naive_rate,
)
from bench.peer import bench_peer
from leo_activation import db
from leo_activation.consumers import snapshots
from leo_activation.consumers.profile_changes import (
    MEMBERSHIP_COLUMNS,
    PROFILE_COLUMNS,
    membership_row,
    profile_row,
)
from leo_activation.consumers.receipts import COLUMNS as RECEIPT_COLUMNS
from leo_activation.consumers.receipts import receipt_row
from leo_activation.contracts import from_json
from leo_activation.dev import corpus
from leo_activation.dev import stack as devstack
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.handler import Envelope, FollowUp
from leo_activation.ops.digest import state_digest
from leo_activation.settings import DEFAULT_BATCH_SIZE

REPO = Path(__file__).resolve().parent.parent
CITUS_HOME = REPO / ".dev" / "bench-citus"
VERSION_COLUMNS = ("tenant_id", "profile_id", "version", "content_hash", "ext_id", "email",
                   "mobile_number", "push_token", "occurred_at")  # fmt: skip

Sizes = dict[str, float]  # section sizes by key; counts are whole, replay_scale is a factor

QUICK: Sizes = {
    "receipts": 100_000,
    "profiles": 30_000,  # profiles per run (plus ~2 membership changes each)
    "naive": 2_000,
    "snapshot": 1_000_000,
    "replay_scale": 1.0,  # x ~114k messages
    "rss_batch": DEFAULT_BATCH_SIZE,
    "batch": DEFAULT_BATCH_SIZE,
    "rounds": 3,  # rounds of (engine, ceiling a) on the receipts and profile-change topics
    "peer_receipts": 200_000,  # receipts of the --peer section, each round
    "peer_rounds": 2,  # rounds of (ours x1, Connect x1, ours x2, Connect x2), interleaved
    "citus_receipts": 50_000,  # receipts of the citus section, each round
    "citus_rounds": 2,  # rounds of (one server, Citus), interleaved
}
FULL = {
    **QUICK,
    "receipts": 1_000_000,
    "profiles": 300_000,
    "naive": 5_000,
    "replay_scale": 8.7,
    "citus_receipts": 200_000,
    "peer_receipts": 1_000_000,
}


# ---------------------------------------------------------------------- the table


@dataclass
class Row:
    section: str
    measure: str
    value: str
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, measure: str, value: str, note: str = "") -> None:
        row = Row(section, measure, value, note)
        self.rows.append(row)
        print(f"  [{section}] {measure}: {value} {note}".rstrip(), flush=True)

    def render(self) -> str:
        widths = [max(len(getattr(r, f)) for r in self.rows) for f in ("section", "measure")]
        widths.append(max(len(r.value) for r in self.rows))
        lines = [
            f"{'section':<{widths[0]}}  {'measure':<{widths[1]}}  {'value':>{widths[2]}}  note",
            "-" * (sum(widths) + 12),
        ]
        for r in self.rows:
            lines.append(
                f"{r.section:<{widths[0]}}  {r.measure:<{widths[1]}}  {r.value:>{widths[2]}}  "
                f"{r.note}".rstrip()
            )
        return "\n".join(lines)


def _rate(r: Rate, unit: str = "msg/s") -> str:
    return f"{r.per_second:,.0f} {unit}"


def _verdict(value: float, target: float) -> str:
    return "OK" if value >= target else "BELOW TARGET"


@dataclass
class Throughput:
    """A section's engine and ceiling (a), measured in interleaved rounds on the same topic."""

    messages: int
    e2e: list[Rate]  # a round each
    decode: list[Rate]  # a round each, right after that round's engine run
    python_path: Rate  # once: it is the slow one

    def rounds(self) -> int:
        return len(self.e2e)


def _median(rates: list[Rate]) -> Rate:
    per_second = statistics.median(r.per_second for r in rates)
    return Rate(rates[0].count, rates[0].count / per_second)


def _each(rates: list[Rate]) -> str:
    return " / ".join(f"{r.per_second:,.0f}" for r in rates)


def _throughput_section(
    report: Report, name: str, measured: Throughput, *, copy: Rate, naive_r: Rate
) -> None:
    e2e, decode = _median(measured.e2e), _median(measured.decode)
    rounds = f"median of {measured.rounds()} rounds"
    report.add(name, "end to end (Engine, Kafka -> PostgreSQL)", _rate(e2e),
               f"{measured.messages:,} msgs; {rounds}: {_each(measured.e2e)}")  # fmt: skip
    python_path = measured.python_path
    native_gain = e2e.per_second / python_path.per_second
    report.add(
        name,
        "end to end, Python path alone (native off)",
        _rate(python_path),
        f"native / Python path: {native_gain:.2f}x",
    )
    report.add(name, "ceiling a: bare consumer, decode only", _rate(decode),
               f"{rounds}: {_each(measured.decode)}")  # fmt: skip
    report.add(
        name, "ceiling b: binary COPY as owner", _rate(copy, "rows/s"), f"{copy.count:,} rows"
    )
    report.add(
        name, "raw ceiling = min(a, b)", f"{min(decode.per_second, copy.per_second):,.0f} msg/s"
    )
    report.add(
        name,
        "naive: INSERT + commit per message",
        _rate(naive_r),
        f"measured on {naive_r.count:,} msgs, rate extrapolated",
    )
    # each round's engine against the ceiling measured right after it: the two move together
    # with the machine's load, so their ratio is steadier than either
    ratios = [
        e.per_second / min(d.per_second, copy.per_second)
        for e, d in zip(measured.e2e, measured.decode, strict=True)
    ]
    ratio = statistics.median(ratios)
    verdict = _verdict(ratio, 0.5)
    each = " / ".join(f"{r:.2f}" for r in ratios)
    report.add(name, "end to end / raw ceiling", f"{ratio:.2f}",
               f"{rounds}: {each}; target >= 0.50 {verdict}")  # fmt: skip
    speedup = e2e.per_second / naive_r.per_second
    verdict = _verdict(speedup, 20)
    report.add(name, "end to end / naive", f"{speedup:.1f}x", f"target >= 20x {verdict}")
    report.facts[name] = {
        "e2e_per_s": [r.per_second for r in measured.e2e],
        "python_path_per_s": python_path.per_second,
        "e2e_over_python_path": native_gain,
        "decode_per_s": [r.per_second for r in measured.decode],
        "copy_per_s": copy.per_second,
        "naive_per_s": naive_r.per_second,
        "e2e_over_ceiling": ratios,
        "e2e_over_naive": speedup,
        "messages": measured.messages,
    }


# ---------------------------------------------------------------------- sections


def _engine_and_decode(
    env: BenchEnv,
    tenants: list[uuid.UUID],
    *,
    prefix: str,
    label: str,
    topic: str,
    batch: int,
    rounds: int,
    messages: Iterable[gen.Message],
) -> Throughput:
    """Publish the section's corpus, then measure on it, in ``rounds`` rounds, the engine (each
    round into a fresh database) and right after it ceiling (a); and once the engine with the
    Python path alone."""

    def engine(path: str, native: bool) -> Rate:
        database = env.fresh_database(f"{label}_{path}")
        env.add_tenants(database, tenants)
        settings = env.settings(database, prefix, f"{label}-{path}", batch_size=batch)
        rate, stats = engine_rate(settings, [topic], n, native=native)
        assert stats.applied == n, stats
        assert stats.dead_lettered == 0, stats
        print(f"  {path}: {rate.per_second:,.0f} msg/s", flush=True)
        return rate

    publishing = env.settings(env.fresh_database(f"{label}_source"), prefix, f"{label}-source")
    started = time.perf_counter()
    n = gen.publish(publishing, topic, messages)
    print(f"  published {n:,} {topic} in {time.perf_counter() - started:.1f}s", flush=True)
    e2e, decode = [], []
    for r in range(1, rounds + 1):
        e2e.append(engine(f"e2e{r}", native=True))
        group = f"bench-{env.run_id}-{label}-decode{r}"
        decode.append(decode_only_rate(publishing, topic, n, group))
        print(f"  decode{r}: {decode[-1].per_second:,.0f} msg/s", flush=True)
    return Throughput(n, e2e, decode, python_path=engine("py", native=False))


def _naive(
    env: BenchEnv,
    tenants: list[uuid.UUID],
    *,
    prefix: str,
    label: str,
    topic: str,
    count: int,
    batch: int,
    apply_one: Callable[[psycopg.Connection[Any], Envelope], None],
) -> Rate:
    """The naive baseline on ``count`` messages of the section's topic, into its own database."""
    database = env.fresh_database(f"{label}_naive")
    env.add_tenants(database, tenants)
    settings = env.settings(database, prefix, f"{label}-naive", batch_size=batch)
    return naive_rate(settings, topic, count, settings.group_id, apply_one)


def bench_receipts(env: BenchEnv, report: Report, sizes: Sizes) -> None:
    n, batch = int(sizes["receipts"]), int(sizes["batch"])
    tenants = gen.bench_tenants(1, 4)
    gen.self_check("receipts", gen.receipts(tenants, 100))
    prefix = env.prefix("rc")
    measured = _engine_and_decode(
        env, tenants, prefix=prefix, label="rc", topic="receipts", batch=batch,
        rounds=int(sizes["rounds"]), messages=gen.receipts(tenants, n),
    )  # fmt: skip
    n = measured.messages

    copy_db = env.fresh_database("rc_copy")
    env.add_tenants(copy_db, tenants)
    rows = (
        receipt_row(
            Envelope("receipts", 0, i, None, kind, rec, rec["tenant_id"], None),
            str(rec["tenant_id"]),
        )
        for i, (kind, rec) in enumerate(gen.receipts(tenants, n))
    )
    copy = copy_rate(copy_db.admin_url, [CopyLoad("delivery_log", RECEIPT_COLUMNS, rows)], n)

    naive_r = _naive(env, tenants, prefix=prefix, label="rc", topic="receipts",
                     count=min(n, int(sizes["naive"])), batch=batch,
                     apply_one=naive.receipt)  # fmt: skip
    _throughput_section(report, "receipts", measured, copy=copy, naive_r=naive_r)


def bench_profiles(env: BenchEnv, report: Report, sizes: Sizes) -> None:
    batch = int(sizes["batch"])
    tenants = gen.bench_tenants(2, 4)
    per_tenant = max(1, int(sizes["profiles"]) // len(tenants))

    gen.self_check("profile-changes", gen.profile_changes(tenants, per_tenant))

    def messages() -> Iterator[gen.Message]:  # sealed, as the product's producers publish them
        return gen.sealed(gen.profile_changes(tenants, per_tenant))

    prefix = env.prefix("pc")
    measured = _engine_and_decode(
        env, tenants, prefix=prefix, label="pc", topic="profile-changes", batch=batch,
        rounds=int(sizes["rounds"]), messages=messages(),
    )  # fmt: skip
    n = measured.messages

    copy_db = env.fresh_database("pc_copy")
    env.add_tenants(copy_db, tenants)

    def envelopes(kind: str) -> Iterator[Envelope]:
        for i, (k, rec) in enumerate(messages()):
            if k == kind:
                yield Envelope("profile-changes", 0, i, None, k, rec, rec["tenant_id"], None)

    # the append-only version history the handler also writes
    def versions() -> Iterator[tuple[Any, ...]]:
        for row in map(profile_row, envelopes("profile_upsert")):
            yield (row[0], row[1], row[8], row[9], row[2], row[3], row[4], row[5], row[10])

    loads = [
        CopyLoad("cdp_profiles", PROFILE_COLUMNS, map(profile_row, envelopes("profile_upsert"))),
        CopyLoad("cdp_profile_version", VERSION_COLUMNS, versions()),
        CopyLoad(
            "segment_membership_change",
            MEMBERSHIP_COLUMNS,
            map(membership_row, envelopes("segment_membership_change")),
        ),
    ]
    copy = copy_rate(copy_db.admin_url, loads, n)

    naive_r = _naive(env, tenants, prefix=prefix, label="pc", topic="profile-changes",
                     count=min(n, int(sizes["naive"])), batch=batch,
                     apply_one=naive.profile_change)  # fmt: skip
    _throughput_section(report, "profile changes", measured, copy=copy, naive_r=naive_r)


def bench_snapshot(env: BenchEnv, report: Report, sizes: Sizes) -> None:
    """Seal a snapshot of an N-member segment. Setup (as the owner, untimed): N profiles and N
    join changes COPYed in, one pending snapshot request at watermark N. Timed: the product's
    ``snapshots.seal_ready`` in one tenant transaction as the application role, with its commit
    (the seal, the figure the target is about); then, timed separately, the follow-ups it
    returned (the tagging of the members' ``cdp_profiles.segment_snapshots``), each in its own
    transaction as the engine runs them."""
    n = int(sizes["snapshot"])
    tenant = gen.bench_tenants(3, 1)[0]
    database = env.fresh_database("snap")
    env.add_tenants(database, [tenant])
    segment = "bench-segment"
    started = time.perf_counter()

    def envelopes() -> Iterator[Envelope]:
        for kind, rec in gen.profile_changes([tenant], n, segments=1, join_rate=1.0, seed=5):
            yield Envelope("profile-changes", 0, 0, None, kind, rec, tenant, None)

    with db.connect(database.admin_url, autocommit=True) as conn:
        for table, columns, build, kind in (
            ("cdp_profiles", PROFILE_COLUMNS, profile_row, "profile_upsert"),
            ("segment_membership_change", MEMBERSHIP_COLUMNS, membership_row,
             "segment_membership_change"),
        ):  # fmt: skip
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for e in envelopes():
                    if e.kind == kind:
                        row = list(build(e))
                        if kind == "segment_membership_change":
                            row[1] = segment
                        copy.write_row(row)
        conn.execute(
            "INSERT INTO segment_snapshot_request (tenant_id, snapshot_id, segment_key, "
            "as_of_sequence, snapshot_reason, requested_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (tenant, uuid.uuid5(gen.NAMESPACE, "bench-snapshot"), segment, n, "bench",
             gen.EPOCH),
        )  # fmt: skip
        conn.execute("VACUUM ANALYZE")
    print(f"  loaded {n:,} profiles and joins in {time.perf_counter() - started:.1f}s", flush=True)

    with db.connect(database.app_url) as conn:
        started = time.perf_counter()
        with db.tenant_transaction(conn, tenant):
            result = snapshots.seal_ready(conn, tenant, [segment])
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        for action in result.of(FollowUp):
            with conn.transaction():
                action(conn)
        tag_seconds = time.perf_counter() - started
        with db.tenant_transaction(conn, tenant):
            counts = conn.execute(
                "SELECT member_count, (SELECT count(*) FROM cdp_profiles "
                "WHERE snapshot_id = ANY (segment_snapshots)), "
                "(SELECT count(*) FROM segment_snapshot_tag_pending) FROM segment_snapshot"
            ).fetchone()
    if counts is None or tuple(map(int, counts)) != (n, n, 0):
        raise AssertionError(f"snapshot not sealed and tagged with {n} members: {counts}")
    report.add(
        "snapshot",
        f"seal a {n:,}-member snapshot (snapshots.seal_ready, app role)",
        f"{seconds:.1f} s",
        f"target <= 10 s {'OK' if seconds <= 10 else 'BELOW TARGET'}; members loaded directly "
        "as owner, request pending",
    )
    report.add(
        "snapshot",
        "tag members' cdp_profiles.segment_snapshots (follow-up, own transaction)",
        f"{tag_seconds:.1f} s",
        "runs after the seal committed, before the batch's offsets commit",
    )
    report.facts["snapshot"] = {"members": n, "seconds": seconds, "tag_seconds": tag_seconds}


def _replay_corpus(scale: float) -> corpus.Corpus:
    if scale >= 8:
        return corpus.build(21, n_tenants=8, n_profiles=12_000, n_segments=2, n_receipts=60_000)
    return corpus.build(
        21,
        n_tenants=4,
        n_profiles=max(10, int(2_500 * scale)),
        n_segments=2,
        n_receipts=max(30, int(15_000 * scale)),
    )


def bench_replay(env: BenchEnv, report: Report, sizes: Sizes) -> None:
    started = time.perf_counter()
    c = _replay_corpus(float(sizes["replay_scale"]))
    prefix = env.prefix("rp")
    live_db = env.fresh_database("rp_live")
    settings = env.settings(live_db, prefix, "rp-live", batch_size=int(sizes["batch"]))
    n = 0
    for topic in ("commands", "profile-changes", "receipts"):
        n += gen.publish(settings, topic, (from_json(topic, m) for m in c.topics.get(topic, [])))
    seconds = time.perf_counter() - started
    print(f"  built and published {n:,} messages in {seconds:.1f}s", flush=True)

    live, _ = engine_rate(settings, ["commands", "profile-changes", "receipts"], n)
    before, _ = state_digest(settings)
    replay_db = env.fresh_database("rp_replay")
    replay_settings = env.settings(replay_db, prefix, "rp-replay", batch_size=int(sizes["batch"]))
    started = time.perf_counter()
    replayed, _ = engine_rate(replay_settings, ["commands", "profile-changes", "receipts"], n)
    wall = time.perf_counter() - started
    after, _ = state_digest(replay_settings)
    same = before == after
    report.add("replay", "messages in the corpus (all input topics)", f"{n:,}")
    report.add("replay", "live run into an empty database", f"{live.seconds:.1f} s", _rate(live))
    report.add(
        "replay",
        "replay from offset 0 into an empty database",
        f"{replayed.seconds:.1f} s",
        f"{_rate(replayed)}; {wall:.1f} s with group join",
    )
    report.add(
        "replay",
        "digest before == digest after",
        "yes" if same else "NO",
        f"{before[:16]}… / {after[:16]}…",
    )
    report.facts["replay"] = {
        "messages": n,
        "seconds": replayed.seconds,
        "digest_before": before,
        "digest_after": after,
        "equal": same,
    }
    if not same:
        raise AssertionError("replay changed the digest")


def _consume_peak_rss(env: BenchEnv, backlog: int, batch: int) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of ``leo-activation consume --until-idle`` draining ``backlog``."""
    tenants = gen.bench_tenants(4, 4)
    database = env.fresh_database(f"rss{backlog}")
    env.add_tenants(database, tenants)
    prefix = env.prefix(f"rss{backlog}")
    settings = env.settings(database, prefix, f"rss{backlog}")
    gen.publish(settings, "receipts", gen.receipts(tenants, backlog, seed=backlog))
    child_env = consume_env(settings)
    argv = [sys.executable, "-m", "leo_activation", "consume", "--until-idle", "3",
            "--batch-size", str(batch)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=child_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    stop = threading.Event()
    stderr_tail: list[bytes] = []

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_tail.append(line)
            del stderr_tail[:-20]

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    handle = psutil.Process(proc.pid)
    while proc.poll() is None and not stop.is_set():
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(5)
    if proc.returncode != 0:
        raise RuntimeError(f"consume exited {proc.returncode}: {b''.join(stderr_tail).decode()}")
    with db.connect(database.app_url) as conn:
        total = 0
        for tenant in tenants:
            with db.tenant_transaction(conn, tenant):
                found = conn.execute("SELECT count(*) FROM delivery_log").fetchone()
                total += int(found[0]) if found else 0
    if total != backlog:
        raise AssertionError(f"consumer applied {total} of {backlog}")
    return peak / (1 << 20), time.perf_counter() - started


def bench_rss(env: BenchEnv, report: Report, sizes: Sizes) -> None:
    batch = int(sizes["rss_batch"])
    small, small_s = _consume_peak_rss(env, 10 * batch, batch)
    large, large_s = _consume_peak_rss(env, 100 * batch, batch)
    report.add(
        "memory",
        f"consumer peak RSS, backlog 10x batch ({10 * batch:,})",
        f"{small:.0f} MiB",
        f"`leo-activation consume --until-idle`, {small_s:.0f} s",
    )
    report.add(
        "memory",
        f"consumer peak RSS, backlog 100x batch ({100 * batch:,})",
        f"{large:.0f} MiB",
        f"{large_s:.0f} s",
    )
    growth = large / small
    report.add(
        "memory",
        "peak RSS 100x / 10x",
        f"{growth:.2f}",
        f"should be ~1 and <= 300 MiB: {'OK' if large <= 300 and growth < 1.25 else 'CHECK'}",
    )
    report.facts["memory"] = {"batch": batch, "rss_10x_mib": small, "rss_100x_mib": large}


def bench_citus(env: BenchEnv, report: Report, sizes: Sizes) -> None:
    """Receipts end to end into a Citus cluster (a coordinator and two workers, started from the
    embedded PostgreSQL in ``.dev/bench-citus``) beside the single server, on the same topic, in
    interleaved rounds. All on this one machine, so the figure is what distribution costs (a
    network hop to the worker, the coordinator's planning and routing), not what it scales to."""
    section = "citus"
    if not devstack.citus_available():
        report.add(section, "receipts end to end", "skipped", "no Citus in the embedded PostgreSQL")
        return
    n, batch, rounds = int(sizes["citus_receipts"]), int(sizes["batch"]), int(sizes["citus_rounds"])
    started_here = not devstack.citus_running(CITUS_HOME)
    coordinator = devstack.start_citus(CITUS_HOME)
    app = conninfo.make_conninfo(coordinator, user=devstack.APP_ROLE, password=devstack.APP_ROLE)
    distributed = BenchEnv(Endpoints(env.endpoints.kafka_bootstrap, app, coordinator), env.run_id)
    try:
        tenants = gen.bench_tenants(5, 8)
        prefix = env.prefix("ct")
        source = env.fresh_database("ct_source")
        published = gen.publish(
            env.settings(source, prefix, "ct-source"), "receipts", gen.receipts(tenants, n)
        )
        rates: dict[str, list[float]] = {"single": [], "citus": []}
        for r in range(rounds):
            for name, where in (("single", env), ("citus", distributed)):
                database = where.fresh_database(f"ct_{name}{r}")
                where.add_tenants(database, tenants)
                settings = where.settings(database, prefix, f"ct-{name}{r}", batch_size=batch)
                rate, stats = engine_rate(settings, ["receipts"], published)
                assert stats.applied == published, stats
                rates[name].append(rate.per_second)
                print(f"  round {r + 1} {name}: {rate.per_second:,.0f} msg/s", flush=True)
    finally:
        distributed.cleanup()
        if started_here:
            devstack.stop_citus(CITUS_HOME)
    single, spread = (statistics.median(rates[k]) for k in ("single", "citus"))
    note = f"median of {rounds} interleaved rounds, {published:,} receipts each"
    report.add(section, "receipts end to end, one server", f"{single:,.0f} msg/s", note)
    report.add(section, "receipts end to end, Citus (coordinator + 2 workers)",
               f"{spread:,.0f} msg/s", note)  # fmt: skip
    report.add(section, "Citus / one server", f"{spread / single:.2f}",
               "same machine: the overhead of distribution, not its scale-out")  # fmt: skip
    report.facts[section] = {"single_per_s": rates["single"], "citus_per_s": rates["citus"]}


SECTIONS: dict[str, Callable[[BenchEnv, Report, Sizes], None]] = {
    "receipts": bench_receipts,
    "profiles": bench_profiles,
    "snapshot": bench_snapshot,
    "replay": bench_replay,
    "memory": bench_rss,
    "gateway": bench_gateway,
    "citus": bench_citus,
    "peer": bench_peer,  # only with --peer
}
PEERS = ("connect",)


# ---------------------------------------------------------------------- entry point


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _env_size(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return type(default)(raw) if raw else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the target sizes (1M messages; slow)")
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    for key, default in QUICK.items():
        flag = "--" + key.replace("_", "-")
        p.add_argument(flag, type=type(default), help=f"[LEO_BENCH_{key.upper()}]")
    p.add_argument(
        "--peer",
        choices=PEERS,
        help="also measure the peer a user would deploy instead (fetches Kafka Connect and the "
        "Debezium JDBC sink with mvn once); `--only peer` runs it alone",
    )
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the databases and topics")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only and "peer" in args.only and not args.peer:
        print("python -m bench: --only peer needs --peer connect", file=sys.stderr)
        return 2
    base = FULL if args.full else QUICK
    sizes = {k: _env_size(f"LEO_BENCH_{k.upper()}", v) for k, v in base.items()}
    sizes |= {k: getattr(args, k) for k in QUICK if getattr(args, k) is not None}
    endpoints = devstack.endpoints()
    env = BenchEnv(endpoints)
    report = Report(facts={"machine": machine(), "sizes": sizes})
    print(f"bench: {report.facts['machine']}\nbench: sizes {sizes}", flush=True)
    started = time.perf_counter()
    try:
        for name, section in SECTIONS.items():
            if (args.only and name not in args.only) or (name == "peer" and not args.peer):
                continue
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            section(env, report, sizes)
            print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        env.cleanup(keep=args.keep)
    report.facts["total_seconds"] = time.perf_counter() - started
    print()
    print(report.render())
    print(f"\n{report.facts['machine']}; total {report.facts['total_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report.facts, indent=2, default=str) + "\n")
    return 0
