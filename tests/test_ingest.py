"""The ingest path end to end on the real broker and database: replay and idempotency (SPEC §4.1-4.2)."""

from __future__ import annotations

import psycopg

from leo_activation import corpus
from leo_activation.digest import state_digest
from leo_activation.settings import Settings
from tests.fix_app import drain, publish_corpus, totals
from tests.fix_db import tenant_tx


def test_consume_applies_corpus_and_accounts_for_every_message(settings: Settings) -> None:
    c = corpus.build(3, n_profiles=10, n_receipts=40)
    publish_corpus(settings, c)
    stats = totals(drain(settings))
    assert stats.consumed == c.count()
    assert stats.dead_lettered == 0
    assert stats.applied + stats.duplicates == c.count()
    tenant = corpus.tenants(3, 2)[0]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn, tenant_tx(conn, tenant):
        profiles = conn.execute("SELECT count(*), min(cdp_version) FROM cdp_profiles").fetchone()
        receipts = conn.execute("SELECT count(DISTINCT log_id) FROM delivery_log").fetchone()
    assert profiles == (10, 2)  # every profile at its newest version
    assert receipts is not None and receipts[0] > 0


def test_consuming_twice_changes_nothing(settings: Settings) -> None:
    publish_corpus(settings, corpus.build(4, n_profiles=8, n_receipts=30))
    drain(settings)
    first, _ = state_digest(settings)
    again = totals(drain(settings, group=settings.group_id + "-again"))
    assert again.applied == 0 and again.duplicates == again.consumed
    assert state_digest(settings)[0] == first
