"""Consent and frequency caps at fan-out, through the real broker and database.

The corpus (``corpus.build(..., with_contact_policy=True)``) gives each tenant a contact policy for
its channel (consent required, at most one delivery a week), consent facts on the profiles'
newest versions (granted; revoked for every fourth; none for every fourth from 2), and two events
dispatched to the same snapshot minutes apart. So every member is, by construction: queued by the
first dispatch and over the cap in the second if it granted consent, and suppressed ``no_consent``
by both otherwise; no request is produced for a suppressed member.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from leo_activation.cli import main
from leo_activation.codec import make_codec
from leo_activation.db import connect
from leo_activation.dev import corpus
from leo_activation.dev.corpus import Corpus
from leo_activation.settings import Settings
from tests.fix_app import drain, publish_corpus, read_topic, totals

# on a single PostgreSQL and on Citus (tests/fix_backends.py)
pytestmark = pytest.mark.backends

SEED = 21


def outcomes(settings: Settings) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(dispatch key, profile id) -> (fan-out status, reason), over every tenant."""
    assert settings.admin_database_url is not None
    with connect(settings.admin_database_url) as conn:
        rows = conn.execute(
            "SELECT d.dispatch_key, l.profile_id, l.delivery_status, l.reason "
            "FROM delivery_log l JOIN dispatch d USING (tenant_id, dispatch_id) "
            "WHERE l.delivery_status IN ('queued', 'suppressed')"
        ).fetchall()
    return {(key, str(profile)): (status, reason) for key, profile, status, reason in rows}


def number_of(c: Corpus) -> dict[str, int]:
    """Profile id -> the profile number its consents were drawn from (its ext_id crm-<p>)."""
    return {
        str(m["profile_id"]): int(str(m["ext_id"]).removeprefix("crm-"))
        for m in c.topics["profile-changes"]
        if m["type"] == "profile_upsert"
    }


def test_consent_and_frequency_cap_decide_each_member(settings: Settings) -> None:
    c = corpus.build(
        SEED, n_tenants=2, n_profiles=12, n_receipts=0, with_activation=True,
        with_contact_policy=True,
    )  # fmt: skip
    publish_corpus(settings, c)
    assert totals(drain(settings, idle=1.5)).dead_lettered == 0
    found = outcomes(settings)
    numbers = number_of(c)
    first, reminder = "dispatch-spring-1", "dispatch-spring-1-reminder"
    members = {profile for key, profile in found if key == first}
    assert members, "the corpus must fan out"
    assert {profile for key, profile in found if key == reminder} == members
    for profile in members:
        consented = numbers[profile] % 4 in (0, 3)
        status, reason = found[(first, profile)]
        again, reason_again = found[(reminder, profile)]
        if consented:
            assert (status, reason) == ("queued", None)
            assert again == "suppressed"
            assert reason_again is not None
            assert reason_again.startswith("frequency_cap:")
        else:
            assert status == again == "suppressed"
            assert reason is not None
            assert reason_again is not None
            assert reason.startswith("no_consent:")
            assert reason_again.startswith("no_consent:")
    queued = {p for (key, p), (status, _) in found.items() if status == "queued"}
    codec = make_codec(None)
    requested = [codec.decode("delivery-requests", m.value())[1] for m in read_topic(
        settings, "delivery-requests")]  # fmt: skip
    assert sorted(str(r["profile_id"]) for r in requested) == sorted(queued)


def test_trace_profile_says_why_a_member_was_not_contacted(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    c = corpus.build(
        SEED, n_tenants=1, n_profiles=8, n_receipts=0, with_activation=True,
        with_contact_policy=True,
    )  # fmt: skip
    publish_corpus(settings, c)
    drain(settings, idle=1.5)
    numbers = number_of(c)
    tenant = corpus.tenants(SEED, 1)[0]
    found = outcomes(settings)
    revoked = next(p for (_, p) in found if numbers[p] % 4 == 1)
    capped = next(p for (_, p) in found if numbers[p] % 4 == 0)
    assert settings.database_url is not None
    flags = ["--database-url", settings.database_url, "trace", "profile"]
    for profile, expected in ((revoked, "no_consent"), (capped, "frequency_cap")):
        assert main([*flags, profile, "--tenant", tenant]) == 0
        assert expected in capsys.readouterr().out


def _policy(tenant: str, **fields: Any) -> dict[str, Any]:
    return {"type": "contact_policy_set", "tenant_id": tenant, "channel": "email",
            "consent_required": True, "occurred_at": "2025-01-01T00:00:00Z", **fields}  # fmt: skip


def _upsert(tenant: str, n: int, consents: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "profile_upsert", "tenant_id": tenant, "profile_id": str(uuid.uuid4()),
            "version": 1, "occurred_at": "2025-01-01T00:00:00Z", "ext_id": f"x-{n}",
            "consents": consents}  # fmt: skip


def _fact(channel: str, state: str = "granted") -> dict[str, Any]:
    return {"channel": channel, "state": state, "legal_basis": "consent", "source": "app",
            "occurred_at": "2025-01-01T00:00:00Z"}  # fmt: skip


def test_malformed_policies_and_consents_are_dead_lettered_alone(settings: Settings) -> None:
    tenant = corpus.tenants(SEED, 1)[0]
    register = {"type": "tenant_register", "tenant_id": tenant, "tenant_name": "T",
                "occurred_at": "2025-01-01T00:00:00Z"}  # fmt: skip
    bad_policies = [
        _policy(tenant, channel="fax"),
        _policy(tenant, frequency_cap_max=3),
        _policy(tenant, frequency_cap_max=0, frequency_cap_window_s=60),
    ]
    bad_consents = [
        _upsert(tenant, 1, [_fact("fax")]),
        _upsert(tenant, 2, [_fact("email", "maybe")]),
        _upsert(tenant, 3, [_fact("email"), _fact("email", "revoked")]),
    ]
    good = [_policy(tenant, frequency_cap_max=3, frequency_cap_window_s=604_800)]
    publish_corpus(settings, Corpus({"commands": [register, *bad_policies, *good]}))
    publish_corpus(settings, Corpus({"profile-changes": [*bad_consents, _upsert(tenant, 4, [])]}))
    stats = totals(drain(settings, idle=1.5))
    assert stats.dead_lettered == 6
    codec = make_codec(None)
    letters = [codec.decode("dead-letters", m.value())[1] for m in read_topic(
        settings, "dead-letters")]  # fmt: skip
    classes = sorted(str(letter["error_class"]) for letter in letters)
    assert classes == ["bad_consent"] * 3 + ["bad_policy"] * 3
    assert settings.admin_database_url is not None
    with connect(settings.admin_database_url) as conn:
        row = conn.execute("SELECT count(*), max(cap_max) FROM contact_policy").fetchone()
        assert row == (1, 3)
        row = conn.execute("SELECT count(*) FROM cdp_profiles").fetchone()
        assert row == (1,)
