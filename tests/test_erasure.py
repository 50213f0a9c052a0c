"""Erasure that survives replay (crypto-shredding), on the real broker and database.

Two tenants' activation stories are published through ``publish`` (which seals every profile's
personal fields under a data key of the profile) and consumed; then one profile of each tenant
is erased. After the topics are compacted and the tables vacuumed, a byte search of the broker's
log directories and of the database's files finds nothing of the erased profiles (email, phone,
data key), and finds a kept profile's data only where the README's "Personal data" says it
lives: its destination in the delivery-requests topic, its data key in the profile-keys topic
and the ``profile_key`` table. ``verify`` rebuilds the same state from the compacted topics.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewTopic

from leo_activation.cli import main
from leo_activation.codec import make_codec
from leo_activation.contracts import from_json
from leo_activation.db import connect
from leo_activation.dev import corpus
from leo_activation.kafka import connection_config, ensure_topics, producer_config
from leo_activation.ops.dead_letters import list_dead_letters
from leo_activation.producers import TopicProducer
from leo_activation.producers.publish import publish
from leo_activation.settings import TOPIC_SUFFIXES, Settings
from tests.fix_app import drain, publish_corpus, read_topic, totals
from tests.test_operating import cli

SEED = 30
COMPACTED = ("profile-keys", "delivery-requests")
# compaction as soon as the broker's cleaner looks (the production settings keep the defaults)
COMPACT_NOW = {
    "segment.ms": "200",
    "min.cleanable.dirty.ratio": "0.001",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "0",
    "file.delete.delay.ms": "0",
}


def queued(settings: Settings) -> dict[str, dict[int, str]]:
    """tenant -> {profile number: profile id} of the members a dispatch queued."""
    assert settings.admin_database_url is not None
    with connect(settings.admin_database_url) as conn:
        rows = conn.execute(
            "SELECT l.tenant_id, l.profile_id, l.destination, l.destination_sealed IS NOT NULL "
            "FROM delivery_log l WHERE l.delivery_status = 'queued'"
        ).fetchall()
    found: dict[str, dict[int, str]] = {}
    numbers = {
        (str(m["tenant_id"]), str(m["profile_id"])): int(str(m["ext_id"]).removeprefix("crm-"))
        for m in STORY.topics["profile-changes"]
        if m["type"] == "profile_upsert"
    }
    for tenant, profile, destination, sealed in rows:
        assert destination is None, "a fan-out row copies the sealed destination"
        assert sealed
        found.setdefault(str(tenant), {})[numbers[(str(tenant), str(profile))]] = str(profile)
    return found


STORY = corpus.build(SEED, n_tenants=2, n_profiles=8, n_receipts=0, with_activation=True)


def personal(number: int) -> list[bytes]:
    """The email addresses (both versions) and the phone number of profile ``number``."""
    return [f"user{number}.v{v}@example.com".encode() for v in (1, 2)] + [
        f"+8490{number:07d}".encode()
    ]


def files_holding(roots: Iterable[Path], needles: list[bytes]) -> dict[bytes, set[str]]:
    """needle -> the files under ``roots`` whose bytes contain it."""
    found: dict[bytes, set[str]] = {n: set() for n in needles}
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # a segment deleted while we looked
                continue
            for needle in needles:
                if needle in data:
                    found[needle].add(str(path))
    return found


def alter_topics(
    settings: Settings, admin: AdminClient, names: Iterable[str], configs: dict[str, str]
) -> None:
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            settings.topic(name),
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in configs.items()
            ],
        )
        for name in names
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result()


def uncompressed_topics(settings: Settings, admin: AdminClient) -> None:
    """The deployment's topics, stored uncompressed by the broker (the producers compress with
    lz4, which hides bytes from a search without protecting anything)."""
    ensure_topics(settings)
    alter_topics(settings, admin, TOPIC_SUFFIXES, {"compression.type": "uncompressed"})


def compact_now(settings: Settings, admin: AdminClient) -> None:
    """Make the broker compact the compacted topics now: small segments, no lag or delay, and a
    record on every partition once the segment time passed, so the segments holding what the
    erasure tombstoned are no longer active (the cleaner never touches the active one)."""
    alter_topics(settings, admin, COMPACTED, COMPACT_NOW)
    time.sleep(0.5)  # past segment.ms
    producer = Producer(producer_config(settings))
    for name in COMPACTED:
        topic = settings.topic(name)
        for partition in admin.list_topics(topic, timeout=10).topics[topic].partitions:
            # a tombstone of a key that never held anything: the cleaner's roll, nothing more
            key = ":".join(str(uuid.uuid4()) for _ in range(3 if name == "profile-keys" else 2))
            producer.produce(topic, key=key.encode(), value=None, partition=partition)
    assert producer.flush(30) == 0


def database_files(settings: Settings) -> Path:
    """The database's folder in the server's data directory, after VACUUM and a CHECKPOINT:
    the key table is rewritten (VACUUM FULL: plain VACUUM leaves a deleted row's bytes in its
    page until the space is reused), every other table vacuumed, and every page on disk."""
    assert settings.admin_database_url is not None
    with connect(settings.admin_database_url, autocommit=True) as conn:
        conn.execute("VACUUM FULL profile_key")
        conn.execute("VACUUM")
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT current_setting('data_directory'), oid FROM pg_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return Path(row[0]) / "base" / str(row[1])


def data_keys(settings: Settings) -> dict[tuple[str, str], bytes]:
    """(tenant, profile) -> its data key, from the keys topic."""
    codec = make_codec(None)
    keys = {}
    for m in read_topic(settings, "profile-keys"):
        if m.value() is not None:
            _, r = codec.decode("profile-keys", m.value())
            keys[(str(r["tenant_id"]), str(r["profile_id"]))] = bytes(r["data_key"])
    return keys


def erase(settings: Settings, members: dict[str, dict[int, str]], number: int) -> None:
    publish(
        settings,
        "profile-changes",
        [
            from_json(
                "profile-changes",
                {
                    "type": "profile_erase",
                    "tenant_id": tenant,
                    "profile_id": profiles[number],
                    "request_ref": f"DSR-{number}",
                    "occurred_at": "2026-02-01T09:00:00Z",
                },
            )
            for tenant, profiles in sorted(members.items())
        ],
    )


def test_erasure_leaves_no_readable_copy_and_verify_rebuilds_it(
    settings: Settings,
    kafka_admin: AdminClient,
    local_stack_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uncompressed_topics(settings, kafka_admin)
    publish_corpus(settings, STORY)
    assert totals(drain(settings, idle=1.5)).dead_lettered == 0
    members = queued(settings)
    assert len(members) == 2
    common = sorted(set.intersection(*(set(m) for m in members.values())))
    assert len(common) >= 2, "the story must queue two profile numbers in both tenants"
    erased, kept = common[0], common[1]
    keys = data_keys(settings)
    erased_keys = [keys[(t, m[erased])] for t, m in members.items()]
    kept_keys = [keys[(t, m[kept])] for t, m in members.items()]
    requests_before = len(read_topic(settings, "delivery-requests"))

    erase(settings, members, erased)
    stats = totals(drain(settings, idle=1.5))
    assert (stats.applied, stats.dead_lettered) == (2, 0)

    # the database: the keys are gone, the profile rows cleared, the history kept
    assert settings.admin_database_url is not None
    with connect(settings.admin_database_url) as conn:
        for tenant, profiles in members.items():
            row = conn.execute(
                "SELECT email, email_sealed, mobile_number_sealed, key_id, erasure_ref "
                "FROM cdp_profiles WHERE tenant_id = %s AND profile_id = %s",
                (tenant, profiles[erased]),
            ).fetchone()
            assert row == (None, None, None, None, f"DSR-{erased}")
            kept_or_not = conn.execute(
                "SELECT profile_id = %s FROM profile_key WHERE tenant_id = %s ORDER BY 1",
                (profiles[erased], tenant),
            ).fetchall()
            assert (True,) not in kept_or_not
            assert (False,) in kept_or_not
            history = conn.execute(
                "SELECT count(*) FROM delivery_log WHERE tenant_id = %s AND profile_id = %s",
                (tenant, profiles[erased]),
            ).fetchone()
            assert history == (1,)

    # the topics: the erasure's tombstones, one a key and one a queued delivery
    tombstones = [m for m in read_topic(settings, "delivery-requests") if m.value() is None]
    assert len(tombstones) == 2
    assert len(read_topic(settings, "delivery-requests")) == requests_before + 2

    # trace says what happened in place of the data
    assert settings.database_url is not None
    for tenant, profiles in members.items():
        flags = ["--database-url", settings.database_url, "trace", "profile", "--tenant", tenant]
        assert main([*flags[:3], flags[3], profiles[erased], *flags[4:]]) == 0
        out = capsys.readouterr().out
        assert f"erased on 2026-02-01, request DSR-{erased}" in out
        assert "example.com" not in out
        assert "+8490" not in out
        assert main([*flags[:3], flags[3], profiles[kept], *flags[4:]]) == 0
        assert f"user{kept}.v2@example.com" in capsys.readouterr().out
        with connect(settings.admin_database_url) as conn:
            row = conn.execute(
                "SELECT delivery_id FROM delivery_log WHERE tenant_id = %s AND profile_id = %s",
                (tenant, profiles[erased]),
            ).fetchone()
        assert row is not None
        delivery = ["--database-url", settings.database_url, "trace", "delivery", str(row[0])]
        assert main([*delivery, "--tenant", tenant]) == 0
        out = capsys.readouterr().out
        assert f"erased on 2026-02-01, request DSR-{erased}" in out
        assert "example.com" not in out
        assert f"+8490{erased:07d}" not in out

    # compaction and VACUUM: no byte of the erased profiles anywhere, the kept one's only
    # where the README says
    compact_now(settings, kafka_admin)
    kafka_data = local_stack_home / "kafka" / "data"
    topic_dirs = [d for d in kafka_data.iterdir() if d.name.startswith(settings.topic_prefix)]
    gone = [*personal(erased), *erased_keys]
    deadline = time.monotonic() + 90
    while True:
        left = {n: f for n, f in files_holding(topic_dirs, gone).items() if f}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert left == {}, f"erased data still on the broker's disk: {left}"
    in_kafka = files_holding(topic_dirs, [*personal(kept), *kept_keys])
    requests_dir = settings.topic("delivery-requests")
    keys_dir = settings.topic("profile-keys")
    kept_email, kept_phone = f"user{kept}.v2@example.com".encode(), f"+8490{kept:07d}".encode()
    for needle, files in in_kafka.items():
        dirs = {Path(f).parent.name.rsplit("-", 1)[0] for f in files}
        if needle in (kept_email, kept_phone):  # the destination of a queued request
            assert dirs == {requests_dir}, (needle, files)
        elif needle in kept_keys:
            assert dirs == {keys_dir}, files
        else:  # the first version's email: never a destination
            assert dirs == set(), (needle, files)

    database = database_files(settings)
    assert {n: f for n, f in files_holding([database], gone).items() if f} == {}
    in_database = files_holding([database], [*personal(kept), *kept_keys])
    assert all(not in_database[n] for n in personal(kept)), "sealed data only in the database"
    assert all(in_database[k] for k in kept_keys), "the kept profile's key is in profile_key"

    # a rebuild from the compacted topics is the live state
    assert cli(settings, "verify", "--group", settings.group_id, "--idle", "3") == 0
    assert "state verified:" in capsys.readouterr().out


@pytest.mark.backends
def test_an_erased_member_gets_no_request_and_the_rest_of_the_dispatch_goes_out(
    settings: Settings,
) -> None:
    """The erasure is published before the dispatch is consumed: its fan-out still writes the
    erased member's row (the history is the same in every run), but produces no request."""
    commands = [m for m in STORY.topics["commands"] if m["type"] == "tenant_register"]
    publish_corpus(settings, corpus.Corpus({"commands": commands}))
    profile_changes = {k: v for k, v in STORY.topics.items() if k == "profile-changes"}
    publish_corpus(settings, corpus.Corpus(profile_changes))
    drain(settings, idle=1.0)
    latest = {}  # the first tenant's segment-0 members: their latest change is a join
    for m in STORY.topics["profile-changes"]:
        if m["type"] == "segment_membership_change" and m["segment_key"] == "segment-0":
            latest[(str(m["tenant_id"]), str(m["profile_id"]))] = m["action"]
    tenant, profile = min(k for k, action in latest.items() if action == "join")
    publish(settings, "profile-changes", [from_json("profile-changes", {
        "type": "profile_erase", "tenant_id": tenant, "profile_id": profile,
        "request_ref": "DSR-early", "occurred_at": "2026-02-01T09:00:00Z"})])  # fmt: skip
    rest = [m for m in STORY.topics["commands"] if m["type"] != "tenant_register"]
    publish_corpus(settings, corpus.Corpus({"commands": rest}))
    assert totals(drain(settings, idle=1.5)).dead_lettered == 0
    codec = make_codec(None)
    requested = {
        str(codec.decode("delivery-requests", m.value())[1]["profile_id"])
        for m in read_topic(settings, "delivery-requests")
        if m.value() is not None
    }
    assert settings.admin_database_url is not None
    with connect(settings.admin_database_url) as conn:
        rows = conn.execute(
            "SELECT profile_id::text FROM delivery_log WHERE delivery_status = 'queued'"
        ).fetchall()
    queued_profiles = {r[0] for r in rows}
    assert requested == queued_profiles - {profile}
    assert requested, "the other members' requests go out"


def _records(messages: Any) -> list[dict[str, Any]]:
    codec = make_codec(None)
    return [codec.decode("profile-changes", m.value())[1] for m in messages]


def test_publish_seals_every_upsert_and_reuses_the_profiles_key(settings: Settings) -> None:
    """No plaintext personal field reaches the topic; publishing the same file again gives the
    same bytes (the ring finds the keys), so the consumers count it as duplicates."""
    upserts = {"profile-changes": [m for m in STORY.topics["profile-changes"]
                                   if m["type"] == "profile_upsert"][:4]}  # fmt: skip
    publish_corpus(settings, corpus.Corpus(upserts))
    first = read_topic(settings, "profile-changes")
    publish_corpus(settings, corpus.Corpus(upserts))
    everything = read_topic(settings, "profile-changes")
    values = [m.value() or b"" for m in everything]
    assert sorted(values) == sorted([m.value() or b"" for m in first] * 2)
    for r in _records(everything):
        assert r["email"] is None
        assert r["mobile_number"] is None
        assert r["ext_id"] is None
        assert r["key_id"] is not None
        assert r["email_sealed"] is not None
        assert r["raw_attributes"] == "{}"
        assert r["raw_attributes_sealed"] is not None
    assert len(read_topic(settings, "profile-keys")) == 2  # one key a profile


def test_a_bad_key_is_dead_lettered_without_its_bytes_and_bad_sealing_is_named(
    settings: Settings,
) -> None:
    """A data key that cannot be mirrored is dead-lettered with its length and hash only (the
    dead-letter topic is kept for ever: no tombstone would reach a key there), and cannot be
    re-driven; an upsert that is sealed and plaintext at once, or sealed without its key, is
    dead-lettered ``bad_sealing``."""
    tenant = corpus.tenants(SEED, 1)[0]
    register = {"type": "tenant_register", "tenant_id": tenant, "tenant_name": "T",
                "occurred_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    publish_corpus(settings, corpus.Corpus({"commands": [register]}))
    profile, key_id = uuid.uuid4(), uuid.uuid4()
    secret = bytes(range(64))
    bad_key = {"tenant_id": tenant, "profile_id": profile, "key_id": key_id,
               "algorithm": "AES-GCM", "data_key": secret,
               "occurred_at": datetime(2026, 1, 1, tzinfo=UTC)}  # fmt: skip
    upsert = {"tenant_id": tenant, "profile_id": profile, "version": 1,
              "occurred_at": datetime(2026, 1, 1, tzinfo=UTC), "raw_attributes": "{}"}  # fmt: skip
    producer = TopicProducer(settings)
    producer.send("profile-keys", "profile_key", bad_key)
    producer.send("profile-changes", "profile_upsert",
                  {**upsert, "key_id": key_id, "email": "plain@example.com",
                   "email_sealed": b"\x00" * 32})  # fmt: skip
    producer.send("profile-changes", "profile_upsert", {**upsert, "email_sealed": b"\x00" * 32})
    producer.flush()
    assert totals(drain(settings, idle=1.0)).dead_lettered == 3
    letters = {d.error_class: d for d in list_dead_letters(settings)}
    assert sorted(letters) == ["bad_key", "bad_sealing"]
    key_letter = letters["bad_key"]
    assert key_letter.original_value is None
    assert key_letter.original_value_length is not None
    assert key_letter.original_value_sha256 is not None
    raw = b"".join(m.value() or b"" for m in read_topic(settings, "dead-letters"))
    assert secret not in raw
    assert cli(settings, "dead-letters", "redrive", str(key_letter.id)) == 1


def test_a_requests_topic_made_before_erasure_existed_is_named_at_start(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A deployment made by an earlier release has a delivery-requests topic that is not
    compacted: an erasure's tombstones would leave the profile's destinations there. Starting
    says so, one line naming the topic and the command that fixes it."""
    topic = settings.topic("delivery-requests")
    admin = AdminClient(connection_config(settings))
    admin.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "delete"})])[
        topic
    ].result()
    caplog.set_level(logging.WARNING, logger="leo_activation.kafka")
    ensure_topics(settings)
    warned = [r.getMessage() for r in caplog.records if "cleanup.policy" in r.getMessage()]
    assert len(warned) == 1, warned
    assert f"topic {topic} has cleanup.policy delete, not compact,delete" in warned[0]
    assert f"--entity-name {topic} --add-config cleanup.policy=[compact,delete]" in warned[0]
