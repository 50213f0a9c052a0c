"""``leo-activation demo``: the whole story, end to end, on the configured stack.

What it does, in order, each step printed as one line with its counts:

1. builds the seeded demo corpus (two tenants, CDP profiles and segment memberships, a campaign,
   an event, a snapshot request, an agent decision with its reasoning and a dispatch);
2. onboards the tenants, then publishes the CDP changes and the activation commands, and consumes
   until idle: profiles are projected, the snapshot is sealed at the CDP's watermark and the
   dispatch fans out one delivery request per member;
3. plays the channel provider: reads the delivery requests topic and publishes receipts for the
   delivery ids it got (sent, delivered, opened, clicked for some, a bounce and a failure, one
   duplicate) plus a poison message; consumes until idle;
4. publishes one late receipt (a ``sent`` the provider stamped before the receipts already
   applied) and consumes again: status precedence keeps the current status right;
5. prints one delivery's five-question trace, a per-tenant summary (profiles, snapshots,
   deliveries by current status, dead letters of this run) and the demo tenants' state digest.

Everything is deterministic (seeded corpus, ids and provider times derived from the messages).
The demo never touches the deployment it is pointed at, only its servers: it runs in a database of
its own on the same PostgreSQL (``--database``, default ``leo_demo``: created from the admin DSN
when missing, migrated, reused), on topics of its own prefix on the same brokers
(``--topic-prefix``, default ``leo-demo.``; never the deployment's), with its own consumer group.
Tenants are never deleted, so demo tenants in the deployment's database would make ``verify`` fail
for ever. Running it twice is safe: the second run republishes the same messages, every one is a
duplicate, no delivery is added and the digest is the same.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

import psycopg
from confluent_kafka import (
    KafkaError,
    KafkaException,
    TopicPartition,
)
from psycopg import conninfo, sql
from psycopg.rows import dict_row

from leo_activation import db
from leo_activation.codec import Codec, make_codec
from leo_activation.consumers import HANDLERS
from leo_activation.consumers.commands import TENANT_LIFECYCLE
from leo_activation.contracts import from_json
from leo_activation.dev import citus, corpus
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.errors import LeoError, PoisonMessage, UsageError, first_line, reported
from leo_activation.kafka import READ_TIMEOUT_S, ensure_topics, message_key, read_to_end, reader
from leo_activation.migrate import migrate
from leo_activation.ops import digest, trace
from leo_activation.producers import TopicProducer
from leo_activation.producers.dead_letters import DeadLetter
from leo_activation.producers.publish import publish
from leo_activation.resources import sql_text
from leo_activation.settings import Settings

DEMO_SEED = 2026
DEFAULT_TOPIC_PREFIX = "leo-demo."
DEFAULT_DATABASE = "leo_demo"
DEFAULT_IDLE_S = 2.0
N_PROFILES = 12
MAX_DEAD_LETTERS_SHOWN = 5
PROVIDERS = {"email": "sendgrid", "sms": "twilio", "push": "fcm", "zalo": "zalo-oa"}
STATUS_COLUMNS = (
    "queued", "suppressed", "sent", "delivered", "opened", "clicked", "failed", "bounced",
    "complained", "unsubscribed",
)  # fmt: skip

JsonObject = dict[str, Any]


# ---------------------------------------------------------------------------- progress display
class Progress:
    """One line per finished step; on a terminal, a live line redrawn while a step runs."""

    def __init__(self, out: IO[str], total: int) -> None:
        self.out = out
        self.total = total
        self.number = 0
        self.live_shown = False
        self.tty = bool(getattr(out, "isatty", lambda: False)())

    def live(self, text: str) -> None:
        if self.tty:
            self.out.write(f"\r\x1b[2K  … {text}")
            self.out.flush()
            self.live_shown = True

    def step(self, text: str) -> None:
        self.number += 1
        if self.live_shown:
            self.out.write("\r\x1b[2K")
            self.live_shown = False
        self.out.write(f"[{self.number}/{self.total}] {text}\n")
        self.out.flush()


# ---------------------------------------------------------------------------- the provider
@dataclass(frozen=True)
class Request:
    """What a channel connector needs from one delivery request."""

    tenant_id: str
    delivery_id: str
    channel: str
    destination: str
    occurred_at: datetime


@dataclass
class ProviderPlan:
    """The receipts a simulated provider reports for a set of delivery requests."""

    receipts: list[JsonObject] = field(default_factory=list)  # published first
    late: list[JsonObject] = field(default_factory=list)  # published after the rest was applied
    duplicates: int = 0
    showcase: Request | None = None  # the delivery whose trace the demo prints


def _receipt(request: Request, status: str, after: timedelta, **response: Any) -> JsonObject:
    provider = PROVIDERS.get(request.channel, "provider")
    moment = request.occurred_at + after
    return {
        "type": "delivery_receipt",
        "tenant_id": request.tenant_id,
        "delivery_id": request.delivery_id,
        "provider": provider,
        "provider_message_id": f"{provider}-{uuid.UUID(request.delivery_id).hex[:12]}",
        "status": status,
        "occurred_at": trace.iso(moment),
        "destination": request.destination,
        "channel": request.channel,
        "provider_response": {"status": status, **response},
    }


def plan_receipts(requests: Iterable[Request], showcase_tenant: str | None = None) -> ProviderPlan:
    """Deterministic provider behaviour, by each delivery's position within its tenant.

    Every delivery is sent and most are delivered; every second one is opened and every fourth
    clicked; one in seven bounces and one in seven fails outright. The first delivery of
    ``showcase_tenant`` (default: the lowest tenant id) is the showcase: delivered, opened and
    clicked, with its ``delivered`` receipt sent twice (a duplicate) and its ``sent`` receipt held
    back and published last (a late receipt whose provider time is earlier than every receipt
    already applied).
    """
    plan = ProviderPlan()
    by_tenant: dict[str, list[Request]] = {}
    for r in requests:
        by_tenant.setdefault(r.tenant_id, []).append(r)
    if showcase_tenant is None and by_tenant:
        showcase_tenant = min(by_tenant)
    for tenant in sorted(by_tenant):
        ordered = sorted(by_tenant[tenant], key=lambda r: (r.destination, r.delivery_id))
        for i, r in enumerate(ordered):
            sent = _receipt(r, "sent", timedelta(seconds=30), code=250)
            if i % 7 == 5:
                plan.receipts.append(_receipt(r, "failed", timedelta(seconds=20), code=421,
                                              error="recipient server unavailable"))  # fmt: skip
                continue
            if i % 7 == 3:
                plan.receipts += [sent, _receipt(r, "bounced", timedelta(seconds=90), code=550,
                                                 error="mailbox does not exist")]  # fmt: skip
                continue
            delivered = _receipt(r, "delivered", timedelta(minutes=1), code=250)
            later = []
            if i % 2 == 0:
                later.append(_receipt(r, "opened", timedelta(hours=1), agent="Mobile Safari"))
            if i % 4 == 0:
                later.append(_receipt(r, "clicked", timedelta(hours=1, minutes=5),
                                      url="https://shop.example.com/spring"))  # fmt: skip
            if tenant == showcase_tenant and i == 0:
                plan.showcase = r
                plan.receipts += [delivered, *later, dict(delivered)]
                plan.duplicates += 1
                plan.late.append(sent)
            else:
                plan.receipts += [sent, delivered, *later]
    return plan


def poison_receipt(codec: Codec, tenant_id: str) -> tuple[bytes, bytes]:
    """(key, value) of a receipt whose delivery id is corrupt: a well-framed message that can
    never be applied. Encoded directly, as a broken connector would, bypassing validation."""
    record = {
        "tenant_id": tenant_id,
        "delivery_id": "not-a-delivery-id",
        "provider": "sendgrid",
        "provider_message_id": "sendgrid-corrupt",
        "status": "delivered",
        "occurred_at": corpus.EPOCH,
        "destination": None,
        "channel": "email",
        "provider_response": "{}",
        "correlation_id": None,
    }
    return message_key("receipts", record), codec.encode("delivery_receipt", record)


# ---------------------------------------------------------------------------- Kafka reading
def _end_offsets(settings: Settings, logical: str) -> dict[int, int]:
    """The current end offset of every partition of a topic.

    A topic created a moment ago may not have elected its partition leaders yet; retriable
    errors are retried until ``READ_TIMEOUT_S``."""
    consumer = reader(settings, "demo")
    topic = settings.topic(logical)
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        while True:
            try:
                partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
                return {
                    p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1])
                    for p in sorted(partitions)
                }
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and (
                    error.retriable()
                    or error.code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                        KafkaError.LEADER_NOT_AVAILABLE,
                                        KafkaError.UNKNOWN_TOPIC_OR_PART)
                )  # fmt: skip
                if not retriable or time.monotonic() > deadline:
                    raise LeoError(f"cannot read the end offsets of {topic}: {exc}") from exc
                time.sleep(0.5)
    finally:
        consumer.close()


def delivery_requests(settings: Settings, codec: Codec) -> list[Request]:
    """Every distinct delivery request published so far (a re-dispatch may repeat one)."""
    found: dict[tuple[str, str], Request] = {}
    for msg in read_to_end(settings, "delivery-requests"):
        _kind, r = codec.decode("delivery-requests", msg.value())
        request = Request(
            tenant_id=str(r["tenant_id"]),
            delivery_id=str(r["delivery_id"]),
            channel=str(r["channel"]),
            destination=str(r["destination"]),
            occurred_at=r["occurred_at"],
        )
        found.setdefault((request.tenant_id, request.delivery_id), request)
    return [found[k] for k in sorted(found)]


def dead_letters_since(settings: Settings, codec: Codec, start: dict[int, int]) -> list[DeadLetter]:
    """Dead letters written since ``start``; one that cannot be read keeps only why."""
    found = []
    for msg in read_to_end(settings, "dead-letters", start):
        try:
            found.append(DeadLetter.decode(codec, msg))
        except PoisonMessage as exc:
            found.append(DeadLetter(None, None, None, exc.error_class, exc.reason))
    return found


def attributed_tenant(letter: DeadLetter) -> str:
    """The tenant from the record, else from the original message key (``tenant:...``), which a
    message that failed to decode still has; else ``unattributed``."""
    tenant = letter.tenant_id
    if tenant is None:
        tenant = (letter.original_key or b"").decode("utf-8", "replace").partition(":")[0]
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        return "unattributed"


def _where(letter: DeadLetter) -> str:
    if letter.original_topic is None:
        return "?"
    return f"{letter.original_topic}/{letter.original_partition}@{letter.original_offset}"


# ---------------------------------------------------------------------------- database reading
def _database_name(dsn: str) -> str | None:
    name = conninfo.conninfo_to_dict(dsn).get("dbname")
    return None if name is None else str(name)


def prepare_database(deployment: Settings, demo: Settings) -> str:
    """Create the demo's database on the deployment's server if it is missing (connecting with
    the deployment's admin DSN; on a Citus cluster, on every node), then migrate it (which
    distributes its tables on Citus); one line saying what was done."""
    admin_dsn = deployment.require_admin_database()
    assert demo.admin_database_url is not None
    assert demo.database_url is not None
    name = _database_name(demo.admin_database_url)
    assert name is not None
    created = False
    try:
        with db.connect(admin_dsn) as conn:
            if not conn.execute(
                sql_text("queries/dev/database_exists.sql"), {"name": name}
            ).fetchone():
                # another demo may create it meanwhile: then it is there, as wanted
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    if citus.node_dsns(admin_dsn):
                        citus.create_database(admin_dsn, name)
                    else:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created = True
        distributed: list[str] = []
        applied = migrate(demo.admin_database_url, demo.database_url, report=distributed.append)
    except psycopg.Error as exc:
        raise LeoError(f"cannot prepare the demo database {name}: {first_line(exc)}") from exc
    state = "created" if created else "reused"
    on = " on Citus" if distributed else ""
    return f"database {name}{on} ({state}; {len(applied)} migrations applied)"


def tenant_summary(settings: Settings, tenant_id: str) -> JsonObject:
    with (
        db.connect(settings.require_database()) as conn,
        db.tenant_transaction(conn, tenant_id),
        conn.cursor(row_factory=dict_row) as cursor,
    ):
        cursor.execute(sql_text("samples/tenant_summary.sql"))
        row = cursor.fetchone()
    return dict(row) if row else {"tenant_name": None, "profiles": 0, "snapshots": 0,
                                  "deliveries": 0, **dict.fromkeys(STATUS_COLUMNS, 0)}  # fmt: skip


def delivery_trace_text(settings: Settings, tenant_id: str, delivery_id: str) -> str:
    doc = trace.read_trace(settings, uuid.UUID(tenant_id), "delivery", uuid.UUID(delivery_id))
    if doc is None:
        raise LeoError(f"delivery {delivery_id} not found for tenant {tenant_id}")
    return trace.render_delivery(doc)


def render_summary(tenants: list[str], summaries: dict[str, JsonObject], dead: Counter[str]) -> str:
    statuses = [s for s in STATUS_COLUMNS if any(summaries[t][s] for t in tenants)]
    header = ["tenant", "profiles", "snapshots", "deliveries", *statuses, "dead letters"]
    rows = [
        [
            f"{summaries[t]['tenant_name'] or '?'} ({t[:8]})",
            *(str(summaries[t][c]) for c in ("profiles", "snapshots", "deliveries")),
            *(str(summaries[t][s]) for s in statuses),
            str(dead.get(t, 0)),
        ]
        for t in tenants
    ]
    if dead.get("unattributed"):
        blanks = ["" for _ in header[1:-1]]
        rows.append(["(no tenant)", *blanks, str(dead["unattributed"])])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, r in enumerate([header, *rows]):
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the story
def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counter.items()))


class Demo:
    STEPS = 8

    def __init__(self, settings: Settings, out: IO[str], idle: float) -> None:
        self.settings = settings
        self.out = out
        self.idle = idle
        self.progress = Progress(out, self.STEPS)
        self.codec = make_codec(settings)
        self.tenants = corpus.tenants(DEMO_SEED, 2)

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def consume(self, label: str) -> str:
        """Consume what was published; a one-line summary of it."""
        total = BatchStats()

        def on_batch(batch: BatchStats) -> None:
            total.add(batch)
            self.progress.live(f"{label}: {total.summary()}")

        Engine(self.settings, HANDLERS, on_batch=on_batch).run(until_idle=self.idle)
        return total.summary()

    def publish(self, topic: str, messages: list[JsonObject]) -> None:
        if messages:
            publish(self.settings, topic, [from_json(topic, m) for m in messages])

    def run(self, database: str) -> int:
        s = self.settings
        self.say(
            f"LEO Activation demo: {database}, topics {s.topic_prefix}*, "
            f"consumer group {s.group_id}"
        )
        ensure_topics(s)
        dead_start = _end_offsets(s, "dead-letters")
        before = {t: tenant_summary(s, t)["deliveries"] for t in self.tenants}
        c = self.step_corpus()
        self.step_onboard(c)
        requests = self.step_activate(c)
        plan = self.step_provider(requests)
        self.step_late(plan)
        self.step_trace(plan)
        self.step_summary(before, dead_start)
        self.step_digest()
        return 0

    def step_corpus(self) -> corpus.Corpus:
        c = corpus.build(
            DEMO_SEED, n_tenants=2, n_profiles=N_PROFILES, n_receipts=0, with_activation=True
        )
        cdp = Counter(str(m["type"]) for m in c.topics.get("profile-changes", []))
        commands = Counter(str(m["type"]) for m in c.topics.get("commands", []))
        self.progress.step(
            f"corpus (seed {DEMO_SEED}): {len(self.tenants)} tenants; CDP: {_counts(cdp)}; "
            f"commands: {_counts(commands)}"
        )
        return c

    def step_onboard(self, c: corpus.Corpus) -> None:
        onboarding = [m for m in c.topics.get("commands", []) if m["type"] in TENANT_LIFECYCLE]
        self.publish("commands", onboarding)
        consumed = self.consume("onboarding")
        self.progress.step(f"onboard tenants: published {len(onboarding)} commands; {consumed}")

    def step_activate(self, c: corpus.Corpus) -> list[Request]:
        commands = [m for m in c.topics.get("commands", []) if m["type"] not in TENANT_LIFECYCLE]
        self.publish("profile-changes", c.topics.get("profile-changes", []))
        self.publish("commands", commands)
        consumed = self.consume("activation")
        requests = delivery_requests(self.settings, self.codec)
        self.progress.step(
            "CDP profiles + campaign, event, snapshot, agent decision, dispatch: "
            f"{consumed}; {len(requests)} delivery requests on "
            f"{self.settings.topic('delivery-requests')}"
        )
        return requests

    def step_provider(self, requests: list[Request]) -> ProviderPlan:
        plan = plan_receipts(requests, showcase_tenant=self.tenants[0])
        self.publish("receipts", plan.receipts)
        producer = TopicProducer(self.settings, codec=self.codec)
        key, value = poison_receipt(self.codec, self.tenants[0])
        producer.produce_raw(self.settings.topic("receipts"), key, value)
        producer.flush()
        statuses = Counter(str(r["status"]) for r in plan.receipts)
        consumed = self.consume("receipts")
        self.progress.step(
            f"provider: {len(plan.receipts)} receipts ({_counts(statuses)}; "
            f"{plan.duplicates} duplicate) and 1 poison message; {consumed}"
        )
        return plan

    def step_late(self, plan: ProviderPlan) -> None:
        self.publish("receipts", plan.late)
        late = ", ".join(f"{r['status']} stamped {r['occurred_at']}" for r in plan.late)
        consumed = self.consume("late receipt")
        self.progress.step(f"late receipt, published last ({late or 'none'}); {consumed}")

    def step_trace(self, plan: ProviderPlan) -> None:
        show = plan.showcase
        if show is None:
            raise LeoError("the demo corpus produced no delivery requests: nothing to trace")
        self.progress.step(f"the five questions for delivery {show.delivery_id}:")
        self.say()
        self.say(delivery_trace_text(self.settings, show.tenant_id, show.delivery_id))
        self.say()
        self.say(
            f"  (leo-activation trace delivery {show.delivery_id} --tenant {show.tenant_id}; "
            "add --json for a document)"
        )
        self.say()

    def step_summary(self, before: dict[str, int], dead_start: dict[int, int]) -> None:
        summaries = {t: tenant_summary(self.settings, t) for t in self.tenants}
        letters = dead_letters_since(self.settings, self.codec, dead_start)
        dead = Counter(attributed_tenant(letter) for letter in letters)
        new = sum(summaries[t]["deliveries"] - before[t] for t in self.tenants)
        self.progress.step(
            "per tenant: deliveries by current status, dead letters of this run; "
            f"new deliveries this run: {new}"
        )
        self.say()
        self.say(render_summary(self.tenants, summaries, dead))
        self.say()
        for letter in letters[:MAX_DEAD_LETTERS_SHOWN]:
            self.say(f"  dead letter {_where(letter)} [{letter.error_class}] {letter.reason}")
        if len(letters) > MAX_DEAD_LETTERS_SHOWN:
            self.say(
                f"  … and {len(letters) - MAX_DEAD_LETTERS_SHOWN} more "
                "(leo-activation dead-letters list)"
            )
        if letters:
            self.say()

    def step_digest(self) -> None:
        per_tenant = {t: digest.state_digest(self.settings, uuid.UUID(t))[0] for t in self.tenants}
        self.progress.step("state digest of the demo tenants (a second run prints the same):")
        self.say(f"demo digest: {digest.combine(per_tenant)}")


def demo_settings(settings: Settings, args: Any) -> Settings:
    """The demo's own database, topic prefix and consumer group (see the module docstring)."""
    prefix = getattr(args, "demo_topic_prefix", None) or DEFAULT_TOPIC_PREFIX
    database = getattr(args, "database", None) or DEFAULT_DATABASE
    admin_dsn, app_dsn = settings.require_admin_database(), settings.require_database()
    if prefix == settings.topic_prefix:
        raise UsageError(
            f"demo --topic-prefix {prefix} is the deployment's topic prefix; the demo needs its own"
        )
    if database in (_database_name(admin_dsn), _database_name(app_dsn)):
        raise UsageError(
            f"demo --database {database} is the deployment's database; the demo needs its own"
        )
    return settings.with_overrides(
        topic_prefix=prefix,
        group_id=f"leo-demo.{prefix}",
        batch_timeout_s=0.2,
        database_url=db.with_database(app_dsn, database),
        admin_database_url=db.with_database(admin_dsn, database),
    )


def cli_demo(settings: Settings, args: Any, out: IO[str] | None = None) -> int:
    demo = demo_settings(settings, args)
    demo.require_kafka()
    database = prepare_database(settings, demo)
    idle = float(getattr(args, "idle", None) or DEFAULT_IDLE_S)
    with reported("demo"):
        return Demo(demo, out or sys.stdout, idle).run(database)
