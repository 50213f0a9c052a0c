"""Consumers of one group apply a tenant's commands and its CDP changes in parallel transactions.

A wait that spans the two topics — a snapshot request and the membership changes it needs, a
dispatch and its snapshot's seal, a dispatch and the profile version a member's join pinned — is
recorded by one transaction and completed by another. Whatever the interleaving, the
transaction that commits second decides: here the command's transaction is held open while the
CDP change's transaction runs beside it (two connections, as two ``consume`` processes would),
and the snapshot must still be sealed and the dispatch fanned out once both committed. The
cluster battery (``test_cluster_faults.py``, three consumers) found a snapshot never sealed this
way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from leo_activation.codec import make_codec
from leo_activation.consumers import HANDLERS
from leo_activation.consumers.commands import CommandsHandler
from leo_activation.consumers.profile_changes import ProfileChangesHandler
from leo_activation.contracts import from_json
from leo_activation.db import connect, tenant_transaction
from leo_activation.dev import corpus
from leo_activation.engine.decode import Decoder
from leo_activation.engine.handler import Envelope, Handler
from leo_activation.kafka import INPUT_TOPICS, message_key
from tests.fix_db import DbUrls

SEED = 5
DECODER = Decoder(make_codec(None), HANDLERS, {t: t for t in INPUT_TOPICS}, "g", native=False)


class Topics:
    """The corpus's messages as envelopes, offsets and publish times in corpus order."""

    def __init__(self) -> None:
        self.offset = 0

    def envelopes(self, topic: str, messages: list[dict[str, Any]]) -> list[Envelope]:
        found = []
        for message in messages:
            self.offset += 1
            kind, record = from_json(topic, message)
            msg = Message(
                topic=topic, partition=0, offset=self.offset, key=message_key(topic, record),
                value=DECODER.codec.encode(kind, record),
                timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + self.offset),
            )  # fmt: skip
            found.append(DECODER.decode(topic, msg))
        return found


def apply(url: str, handler: Handler, envelopes: list[Envelope]) -> None:
    tenant = envelopes[0].tenant_id
    with connect(url) as conn, tenant_transaction(conn, tenant):
        handler.apply(conn, tenant, envelopes)


def lock_waiters(admin_url: str, database: str) -> int:
    with connect(admin_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event = 'advisory'",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def held_open(url: str, handler: Handler, envelopes: list[Envelope]) -> Iterator[None]:
    """``envelopes`` applied in a transaction that commits when the block ends."""
    tenant = envelopes[0].tenant_id
    with connect(url) as conn, tenant_transaction(conn, tenant):
        handler.apply(conn, tenant, envelopes)
        yield


def one_query(url: str, query: str) -> int:
    with connect(url) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def last_change_and_a_members_pinned_version(
    changes: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The membership change with the highest sequence (the snapshot waits for it), and the
    profile version a member's join pinned (the dispatch waits for it)."""
    moves = sorted((m for m in changes if m["type"] == "segment_membership_change"),
                   key=lambda m: m["sequence"])  # fmt: skip
    latest = {m["profile_id"]: m for m in moves}
    member = next(m for m in reversed(moves) if latest[m["profile_id"]]["action"] == "join")
    pinned = next(
        m for m in changes
        if m["type"] == "profile_upsert" and m["profile_id"] == member["profile_id"]
        and m["version"] == member["profile_version"]
    )  # fmt: skip
    return moves[-1], pinned


HELD = {  # what the command's transaction holds -> the CDP change the other applies beside it
    "snapshot request / its last membership change": ("snapshot_request", 0),
    "dispatch / the membership change that seals its snapshot": ("dispatch_request", 0),
    "dispatch / a member's pinned profile version": ("dispatch_request", 1),
}


@pytest.mark.parametrize("held", HELD)
def test_a_wait_across_topics_is_decided_by_whichever_transaction_commits_second(
    held: str, db: DbUrls
) -> None:
    c = corpus.build(SEED, n_tenants=1, n_profiles=30, n_segments=1, n_receipts=0,
                     with_activation=True)  # fmt: skip
    commands, changes = c.topics["commands"], c.topics["profile-changes"]
    members = next(m for m in commands if m["type"] == "snapshot_request")["expected_count"]
    assert members > 0
    first_kind, which = HELD[held]
    first = [m["type"] for m in commands].index(first_kind)
    late = last_change_and_a_members_pinned_version(changes)[which]
    topics = Topics()
    apply(db.app_url, CommandsHandler(), topics.envelopes("commands", commands[:first]))
    early = [m for m in changes if m is not late]
    apply(db.app_url, ProfileChangesHandler(), topics.envelopes("profile-changes", early))
    command_half = topics.envelopes("commands", commands[first:])
    cdp_half = topics.envelopes("profile-changes", [late])

    with held_open(db.app_url, CommandsHandler(), command_half):
        beside = threading.Thread(
            target=apply, args=(db.app_url, ProfileChangesHandler(), cdp_half), daemon=True
        )
        beside.start()
        deadline = time.monotonic() + 10
        # the CDP half waits for the command's transaction (or, unserialised, is done already)
        while beside.is_alive() and lock_waiters(db.admin_url, db.name) == 0:
            assert time.monotonic() < deadline, "the CDP half neither finished nor waited"
            time.sleep(0.05)
    beside.join(30)
    assert not beside.is_alive()

    assert one_query(db.admin_url, "SELECT count(*) FROM segment_snapshot") == 1
    queued = "SELECT count(*) FROM delivery_log WHERE delivery_status = 'queued'"
    assert one_query(db.admin_url, queued) == members
