"""The ingest path end to end on the real broker and database: replay, idempotency."""

from __future__ import annotations

import psycopg
import pytest

from leo_activation.consumers import HANDLERS
from leo_activation.dev import corpus
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.loop import Engine
from leo_activation.ops.digest import state_digest
from leo_activation.settings import Settings
from tests.fix_app import drain, publish_corpus, read_topic, totals
from tests.fix_db import fresh_database, tenant_tx

# on a single PostgreSQL and on Citus (tests/fix_backends.py)
pytestmark = pytest.mark.backends


def test_consume_applies_corpus_and_accounts_for_every_message(settings: Settings) -> None:
    c = corpus.build(3, n_profiles=10, n_receipts=40)
    publish_corpus(settings, c)
    stats = totals(drain(settings))
    # publish sealed every profile's upserts under a data key of its own, on the keys topic
    keys = len(read_topic(settings, "profile-keys"))
    assert keys == 2 * 10
    assert stats.consumed == c.count() + keys
    assert stats.dead_lettered == 0
    assert stats.applied + stats.duplicates == c.count() + keys
    tenant = corpus.tenants(3, 2)[0]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, tenant):
        profiles = conn.execute("SELECT count(*), min(cdp_version) FROM cdp_profiles").fetchone()
        receipts = conn.execute("SELECT count(DISTINCT log_id) FROM delivery_log").fetchone()
    assert profiles == (10, 2)  # every profile at its newest version
    assert receipts is not None
    assert receipts[0] > 0


def test_consuming_twice_changes_nothing(settings: Settings) -> None:
    publish_corpus(settings, corpus.build(4, n_profiles=8, n_receipts=30))
    drain(settings)
    first, _ = state_digest(settings)
    again = totals(drain(settings, group=settings.group_id + "-again"))
    assert again.applied == 0
    assert again.duplicates == again.consumed
    assert state_digest(settings)[0] == first


def test_replaying_into_an_empty_database_reproduces_the_state(
    settings: Settings, stack: Endpoints, db_template: str
) -> None:
    publish_corpus(settings, corpus.build(8, n_profiles=8, n_receipts=30))
    drain(settings)
    before, _ = state_digest(settings)
    with fresh_database(stack, db_template) as empty:
        rebuilt = settings.with_overrides(
            database_url=empty.app_url, admin_database_url=empty.admin_url
        )
        drain(rebuilt, group=settings.group_id + "-rebuild")
        assert state_digest(rebuilt)[0] == before


def test_traffic_waits_for_an_unread_registration_and_dies_only_when_none_is_coming(
    settings: Settings,
) -> None:
    c = corpus.build(9, n_tenants=1, n_profiles=2, n_receipts=4, duplicate_rate=0)
    publish_corpus(settings, corpus.Corpus({"commands": c.topics["commands"]}))
    publish_corpus(settings, corpus.Corpus({"receipts": c.topics["receipts"]}))
    receipts = read_topic(settings, "receipts")
    engine = Engine(settings, HANDLERS)
    try:
        newest = max(m.timestamp()[1] for m in receipts)
        batch = engine.decoder.decode_batch(receipts)
        # the registration was published first but nobody has read it: the receipts must wait
        horizon = engine.waiting.horizons(batch)["commands"]
        assert horizon is not None
        assert horizon <= newest
        drain(settings, idle=1.5)  # reads everything, registration included
        assert engine.waiting.horizons(batch)["commands"] is None
        # a command published after the traffic does not hold it back
        publish_corpus(settings, corpus.Corpus({"commands": c.topics["commands"]}))
        horizon = engine.waiting.horizons(batch)["commands"]
        assert horizon is not None
        assert horizon > newest
    finally:
        engine.waiting.close()
    total = totals(drain(settings, idle=1.5))
    assert total.dead_lettered == 0
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, corpus.tenants(9, 1)[0]):
        row = conn.execute("SELECT count(*) FROM delivery_log").fetchone()
    assert row == (4,)
