"""``leo-activation trace``: the golden rule's five answers for a delivery, and a profile's story.

``trace delivery ID --tenant T`` answers, for one delivery:
**why** (campaign), **what** (marketing event), **to whom at that moment** (the recipient and the
sealed segment snapshot it was addressed from), **who decided** (the agent task with its reasoning
summary and trace) and **what really happened** (every ``delivery_log`` fact in provider-time
order, and the current status). ``trace profile ID --tenant T`` prints the profile's CDP facts and
every activation that touched it.

Both run as the APPLICATION role in the tenant's own read-only transaction, so row-level security
decides what exists: another tenant's delivery is "not found", exactly like a made-up id. The SQL
lives in ``sql/queries/trace/`` over the analyst views of ``sql/migrations/0004_views.sql``.
Text output is for people; ``--json`` prints a stable document (``schema`` names its version).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from leo_activation import db, ids
from leo_activation.errors import LeoError, first_line
from leo_activation.resources import sql_text
from leo_activation.sealing import DESTINATION_FIELD, unseal
from leo_activation.settings import Settings

DELIVERY_SCHEMA = "leo-activation/trace-delivery/v1"
PROFILE_SCHEMA = "leo-activation/trace-profile/v1"
_TEXT_TRACE_LIMIT = 400  # characters of reasoning_trace shown in text mode (--json has all)

Row = dict[str, Any]
Document = dict[str, Any]


# ---------------------------------------------------------------------------- reading
def _rows(conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(sql_text(query), params)
        return cursor.fetchall()


def delivery_document(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, delivery_id: uuid.UUID
) -> Document | None:
    """The trace of one delivery, or None when the tenant has no such delivery.

    ``conn`` must be inside the tenant's transaction (``db.tenant_transaction``)."""
    params = {"tenant_id": tenant_id, "delivery_id": delivery_id}
    found = _rows(conn, "queries/trace/delivery.sql", params)
    if not found:
        return None
    t = found[0]
    history = _rows(conn, "queries/trace/delivery_history.sql", params)
    opened = Opener(conn, t["tenant_id"], t["profile_id"], delivery_id)
    t["destination"] = opened.destination(t["destination"], delivery_id=delivery_id)
    for h in history:
        h["destination"] = opened.destination(h["destination"], log_id=h["log_id"])
    return {
        "schema": DELIVERY_SCHEMA,
        "tenant": {"tenant_id": t["tenant_id"], "tenant_name": t["tenant_name"]},
        "delivery_id": t["delivery_id"],
        "why": None if t["campaign_id"] is None else {
            "campaign_id": t["campaign_id"],
            "campaign_code": t["campaign_code"],
            "campaign_name": t["campaign_name"],
            "objective": t["objective"],
            "status": t["campaign_status"],
        },
        "what": None if t["event_id"] is None else {
            "event_id": t["event_id"],
            "event_key": t["event_key"],
            "event_name": t["event_name"],
            "event_type": t["event_type"],
            "event_channel": t["event_channel"],
            "status": t["event_status"],
        },
        "to_whom": None if t["profile_id"] is None else {
            "profile_id": t["profile_id"],
            "profile_version": t["profile_version"],
            "channel": t["channel"],
            "destination": t["destination"],
            "fanout_status": t["fanout_status"],
            "fanout_reason": t["fanout_reason"],
            "profile_in_snapshot": t["profile_in_snapshot"],
            "member_profile_version": t["member_profile_version"],
            "snapshot": None if t["segment_name"] is None else {
                "snapshot_id": t["snapshot_id"],
                "segment_name": t["segment_name"],
                "segment_version": t["segment_version"],
                "as_of_sequence": t["as_of_sequence"],
                "reason": t["snapshot_reason"],
                "member_count": t["snapshot_member_count"],
                "created_at": t["snapshot_created_at"],
            },
        },
        "who_decided": None if t["task_id"] is None else {
            "task_id": t["task_id"],
            "task_key": t["task_key"],
            "agent_name": t["agent_name"],
            "task_type": t["task_type"],
            "reasoning_summary": t["reasoning_summary"],
            "reasoning_trace": t["reasoning_trace"],
            "created_at": t["task_created_at"],
            "status": t["task_status"],
            "status_at": t["task_status_at"],
            "status_note": t["task_status_note"],
        },
        "dispatch": None if t["dispatch_id"] is None else {
            "dispatch_id": t["dispatch_id"],
            "dispatch_key": t["dispatch_key"],
            "requested_at": t["dispatch_requested_at"],
            "state": t["dispatch_state"],
            "suppress_reason": t["dispatch_suppress_reason"],
            "dispatches_of_this_delivery": t["dispatch_count"],
        },
        "what_happened": {
            "current_status": t["current_status"],
            "current_status_at": t["current_status_at"],
            "current_provider": t["current_provider"],
            "first_queued_at": t["first_queued_at"],
            "last_receipt_at": t["last_receipt_at"],
            "fact_count": t["fact_count"],
            "receipt_count": t["receipt_count"],
            "history": [
                {
                    "step": h["step"],
                    "log_id": h["log_id"],
                    "status": h["delivery_status"],
                    "occurred_at": h["occurred_at"],
                    "provider": h["provider"],
                    "provider_message_id": h["provider_message_id"],
                    "provider_response": h["provider_response"],
                    "reason": h["reason"],
                    "channel": h["channel"],
                    "destination": h["destination"],
                    "correlation_id": h["correlation_id"],
                    "is_current": h["is_current"],
                    "arrived_late": h["arrived_late"],
                    "received": {
                        "topic": h["source_topic"],
                        "partition": h["source_partition"],
                        "offset": h["source_offset"],
                        "ingested_at": h["ingested_at"],
                    },
                }
                for h in history
            ],
        },
    }  # fmt: skip


def profile_document(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, profile_id: uuid.UUID
) -> Document | None:
    """A profile's facts and every activation that touched it, or None when the tenant knows
    neither the profile nor any activation addressed to it."""
    params = {"tenant_id": tenant_id, "profile_id": profile_id}
    found = _rows(conn, "queries/trace/profile.sql", params)
    activity = _rows(conn, "queries/trace/profile_activity.sql", params)
    if not found and not activity:
        return None
    p = found[0] if found else None
    opened = Opener(conn, tenant_id, profile_id)
    if p is not None:
        opened.profile(p)
    for a in activity:
        a["destination"] = opened.destination(a["destination"], delivery_id=a["delivery_id"])
    return {
        "schema": PROFILE_SCHEMA,
        "profile_id": profile_id,
        "erasures": opened.erasures,
        "profile": None if p is None else {
            "tenant_name": p["tenant_name"],
            "ext_id": p["ext_id"],
            "email": p["email"],
            "mobile_number": p["mobile_number"],
            "has_push_token": p["has_push_token"],
            "segments": p["segments"],
            "data_labels": p["data_labels"],
            "segment_snapshots": p["segment_snapshots"],
            "raw_attributes": p["raw_attributes"],
            "cdp_version": p["cdp_version"],
            "updated_at": p["updated_at"],
            "consents": p["consents"],
        },
        "activations": [
            {
                "activity": a["activity"],
                "occurred_at": a["occurred_at"],
                "snapshot_id": a["snapshot_id"],
                "segment_name": a["segment_name"],
                "segment_version": a["segment_version"],
                "profile_version": a["profile_version"],
                "delivery_id": a["delivery_id"],
                "delivery_status": a["delivery_status"],
                "channel": a["channel"],
                "destination": a["destination"],
                "event_id": a["event_id"],
                "event_name": a["event_name"],
                "campaign_id": a["campaign_id"],
                "campaign_code": a["campaign_code"],
                "task_id": a["task_id"],
                "agent_name": a["agent_name"],
                "dispatch_id": a["dispatch_id"],
                "fanout_reason": a["fanout_reason"],
            }
            for a in activity
        ],
    }  # fmt: skip


class Opener:
    """Opens a profile's sealed fields with its data keys for a trace; where an erasure
    destroyed the key, the trace says so in place of the data."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        tenant_id: uuid.UUID,
        profile_id: uuid.UUID | None,
        delivery_id: uuid.UUID | None = None,
    ) -> None:
        params = {"tenant_id": tenant_id, "profile_id": profile_id, "delivery_id": delivery_id}
        self.erasures = [
            {"erased_at": e["erased_at"], "request_ref": e["request_ref"]}
            for e in _rows(conn, "queries/trace/erasures.sql", params)
        ]
        self.sealed = _rows(conn, "queries/trace/sealed_destinations.sql", params)

    def unreadable(self) -> str:
        if not self.erasures:
            return "(sealed; its data key has not arrived yet)"
        last = self.erasures[-1]
        return f"erased on {iso(last['erased_at'])[:10]}, request {last['request_ref']}"

    def open(self, field: str, sealed: bytes | None, data_key: bytes | None) -> str | None:
        if sealed is None:
            return None
        return self.unreadable() if data_key is None else unseal(data_key, field, sealed)

    def destination(
        self,
        plaintext: str | None,
        *,
        delivery_id: uuid.UUID | None = None,
        log_id: uuid.UUID | None = None,
    ) -> str | None:
        """A row's destination: its plaintext (an upsert v1-v3), else its sealed one opened."""
        if plaintext is not None:
            return plaintext
        for row in self.sealed:
            if row["log_id"] == log_id or (log_id is None and row["delivery_id"] == delivery_id):
                field = DESTINATION_FIELD[row["channel"]]
                return self.open(field, row["destination_sealed"], row["data_key"])
        return None

    def profile(self, p: Row) -> None:
        """The current profile row's sealed fields opened in place of its plaintext ones."""
        for field in ("ext_id", "email", "mobile_number", "raw_attributes"):
            opened = self.open(field, p[f"{field}_sealed"], p["data_key"])
            if opened is not None:
                readable = field == "raw_attributes" and p["data_key"] is not None
                p[field] = json.loads(opened) if readable else opened
        erased = ("ext_id", "email", "mobile_number")
        if self.erasures and all(p[field] is None for field in erased):
            for field in erased:
                p[field] = self.unreadable()


def read_trace(
    settings: Settings, tenant_id: uuid.UUID, what: str, object_id: uuid.UUID
) -> Document | None:
    """One trace document read as the application role in ``tenant_id``'s transaction."""
    try:
        with db.connect(
            settings.require_database(), application_name="leo-activation trace"
        ) as conn:
            conn.read_only = True
            with db.tenant_transaction(conn, tenant_id):
                if what == "delivery":
                    return delivery_document(conn, tenant_id, object_id)
                return profile_document(conn, tenant_id, object_id)
    except psycopg.errors.UndefinedTable as exc:
        raise LeoError(
            f"the database has no trace views ({first_line(exc)}): run `leo-activation migrate`"
        ) from exc
    except psycopg.Error as exc:
        raise LeoError(f"trace {what} failed: {first_line(exc)}") from exc


# ---------------------------------------------------------------------------- JSON
def _json_default(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a trace")


def to_json(document: Document) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)


# ---------------------------------------------------------------------------- text
def iso(moment: datetime | None) -> str:
    """A timestamp in UTC, ISO-8601 with ``Z`` (``-`` when absent)."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _q(value: object) -> str:
    return "-" if value is None else f'"{value}"'


def _short(value: object, limit: int) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)
    return text if len(text) <= limit else text[: limit - 1] + "… (--json shows all)"


_UNKNOWN = "  unknown: no dispatch fact links this delivery (only provider receipts arrived)"


def _why(why: Document | None) -> list[str]:
    if why is None:
        return [_UNKNOWN]
    return [
        f"  {why['campaign_code']}  {_q(why['campaign_name'])}  [{why['status']}]",
        f"  objective: {why['objective'] or '-'}",
    ]


def _what(what: Document | None) -> list[str]:
    if what is None:
        return [_UNKNOWN]
    return [
        f"  {what['event_key']}  {_q(what['event_name'])}  type {what['event_type']}, "
        f"channel {what['event_channel']}  [{what['status']}]"
    ]


def _to_whom(whom: Document | None) -> list[str]:
    if whom is None:
        return [_UNKNOWN]
    version = whom["profile_version"]
    lines = [
        f"  profile {whom['profile_id']} -> {whom['destination'] or '-'} ({whom['channel']})"
        + ("" if version is None else f", from CDP profile version {version}")
    ]
    if whom["fanout_status"] == "suppressed":
        lines.append(f"  suppressed by the fan-out: {whom['fanout_reason'] or '-'}")
    snap = whom["snapshot"]
    if snap is None:
        return [*lines, "  snapshot: not sealed in this database"]
    lines.append(
        f"  snapshot {snap['snapshot_id']} of segment {_q(snap['segment_name'])} "
        f"version {snap['segment_version']}: {snap['member_count']} members, "
        f"sealed {iso(snap['created_at'])}"
    )
    if snap["reason"]:
        lines.append(f"  reason: {snap['reason']}")
    member = {True: "yes", False: "NO", None: "unknown"}[whom["profile_in_snapshot"]]
    lines.append(f"  the profile was a member of that snapshot: {member}")
    return lines


def _who_decided(who: Document | None, dispatch: Document | None) -> list[str]:
    lines = [_UNKNOWN]
    if who is not None:
        lines = [
            f"  agent {_q(who['agent_name'])}, {who['task_type']} task {who['task_key']} "
            f"[{who['status']} at {iso(who['status_at'])}]",
            f"  reasoning: {who['reasoning_summary'] or '-'}",
        ]
        if who["reasoning_trace"]:
            lines.append(f"  trace: {_short(who['reasoning_trace'], _TEXT_TRACE_LIMIT)}")
        if who["status_note"]:
            lines.append(f"  latest note: {who['status_note']}")
    if dispatch is not None:
        lines.append(
            f"  dispatched by {dispatch['dispatch_key']} at {iso(dispatch['requested_at'])} "
            f"[{dispatch['state']}]"
        )
        others = (dispatch["dispatches_of_this_delivery"] or 1) - 1
        if others:
            lines.append(f"  (and {others} later dispatch(es) of the same event to this profile)")
    return lines


def _what_happened(happened: Document) -> list[str]:
    lines = [
        f"  current status: {happened['current_status']} "
        f"(provider time {iso(happened['current_status_at'])}); "
        f"first queued {iso(happened['first_queued_at'])}, "
        f"last receipt {iso(happened['last_receipt_at'])}",
        f"  {'#':>3}  {'provider time':<27} {'status':<12} {'provider':<10} "
        f"{'message id':<22} note",
    ]
    for h in happened["history"]:
        notes = []
        if h["is_current"]:
            notes.append("current")
        if h["arrived_late"]:
            notes.append("arrived late")
        if h["reason"]:
            notes.append(h["reason"])
        line = (
            f"  {h['step']:>3}  {iso(h['occurred_at']):<27} {h['status']:<12} "
            f"{h['provider'] or '-':<10} {h['provider_message_id'] or '-':<22} {', '.join(notes)}"
        )
        lines.append(line.rstrip())
    return lines


def render_delivery(doc: Document) -> str:
    """The five answers as text for people."""
    tenant = doc["tenant"]
    name = f" ({tenant['tenant_name']})" if tenant["tenant_name"] else ""
    return "\n".join(
        [
            f"Delivery {doc['delivery_id']}",
            f"tenant {tenant['tenant_id']}{name}",
            "",
            "1. WHY (campaign)",
            *_why(doc["why"]),
            "2. WHAT (marketing event)",
            *_what(doc["what"]),
            "3. TO WHOM, AT THAT MOMENT (segment snapshot)",
            *_to_whom(doc["to_whom"]),
            "4. WHO DECIDED (agent task)",
            *_who_decided(doc["who_decided"], doc["dispatch"]),
            "5. WHAT REALLY HAPPENED (delivery log)",
            *_what_happened(doc["what_happened"]),
        ]
    )


def render_profile(doc: Document) -> str:
    lines = [f"Profile {doc['profile_id']}"]
    lines += [
        f"  erased on {iso(e['erased_at'])[:10]}, request {e['request_ref']}"
        for e in doc["erasures"]
    ]
    p = doc["profile"]
    if p is None:
        lines.append("  no CDP profile row (only activations reference it)")
    else:
        lines += [
            f"  tenant: {p['tenant_name'] or '-'}   CDP version {p['cdp_version']} "
            f"(updated {iso(p['updated_at'])})",
            f"  ext id {p['ext_id'] or '-'}, email {p['email'] or '-'}, "
            f"mobile {p['mobile_number'] or '-'}, "
            f"push token {'yes' if p['has_push_token'] else 'no'}",
            f"  segments now: {', '.join(p['segments']) or '-'}; "
            f"labels: {', '.join(p['data_labels']) or '-'}",
            f"  snapshots ever a member of: {len(p['segment_snapshots'])}",
            f"  consent: {_consents(p['consents'])}",
        ]
    activations = doc["activations"]
    lines.append(f"Activations ({len(activations)}):")
    for a in activations:
        if a["activity"] == "snapshot":
            lines.append(
                f"  {iso(a['occurred_at'])}  snapshot  {a['snapshot_id']}  segment "
                f"{_q(a['segment_name'])} {a['segment_version']}"
            )
        else:
            lines.append(
                f"  {iso(a['occurred_at'])}  delivery  {a['delivery_id']}  "
                f"{a['delivery_status']:<10} {a['campaign_code'] or '-'} / "
                f"{_q(a['event_name'])} via {a['channel'] or '-'}, decided by "
                f"{_q(a['agent_name'])}"
            )
            if a["fanout_reason"]:
                lines.append(f"    not contacted: {a['fanout_reason']}")
    return "\n".join(lines)


def _consents(consents: dict[str, Any]) -> str:
    """A profile's consent facts, one per channel, for people."""
    if not consents:
        return "none recorded"
    return "; ".join(
        f"{channel} {c['state']} ({c['legal_basis']}, {c['source']}, {c['occurred_at']})"
        for channel, c in sorted(consents.items())
    )


# ---------------------------------------------------------------------------- CLI
def cli_trace(settings: Settings, args: Any) -> int:
    what: str = args.what
    object_id = ids.parse(args.id, f"{what} id")
    tenant_id = ids.parse(args.tenant, "--tenant")
    document = read_trace(settings, tenant_id, what, object_id)
    if document is None:
        raise LeoError(f"{what} {object_id} not found for tenant {tenant_id}")
    if args.json:
        print(to_json(document))
    else:
        print(render_delivery(document) if what == "delivery" else render_profile(document))
    return 0
