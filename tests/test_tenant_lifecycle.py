"""A tenant's disable and enable take effect at the time they were published, whatever order the
topics are read in: a profile change published before a disable is applied, one published after
it is dead-lettered ``disabled_tenant``, one published after the enable is applied again, when
the commands are consumed before the data and when the data is consumed first (it waits for the
commands published before it)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from leo_activation.consumers import HANDLERS
from leo_activation.contracts import from_json
from leo_activation.dev.stack import Endpoints
from leo_activation.engine.loop import Engine
from leo_activation.engine.stats import BatchStats
from leo_activation.ops.dead_letters import list_dead_letters
from leo_activation.ops.digest import state_digest
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_db import fresh_database

TENANT = "7d3c2a8e-1b4f-4e61-9c0a-2f5e8d9b6a10"
PER_PHASE = 40


def upserts(phase: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "profile_upsert",
            {
                "type": "profile_upsert",
                "tenant_id": TENANT,
                "profile_id": str(uuid.uuid5(uuid.UUID(TENANT), f"{phase}-{p}")),
                "version": 1,
                "occurred_at": "2026-03-01T00:00:00Z",
                "ext_id": f"{phase}-{p}",
                "email": f"{phase}{p}@example.com",
                "mobile_number": None,
                "data_labels": [],
                "push_token": None,
                "raw_attributes": {},
            },
        )
        for p in range(PER_PHASE)
    ]


def command(kind: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "tenant_id": TENANT, "occurred_at": at, **extra}


def send(settings: Settings, topic: str, messages: list[dict[str, Any]]) -> None:
    publish(settings, topic, [from_json(topic, m) for m in messages])
    time.sleep(0.05)  # the next phase gets strictly later Kafka timestamps


def publish_story(settings: Settings) -> None:
    send(settings, "commands", [command("tenant_register", "2026-01-01T00:00:00Z",
                                        tenant_name="Shop")])  # fmt: skip
    send(settings, "profile-changes", [m for _, m in upserts("before")])
    send(settings, "commands", [command("tenant_disable", "2026-02-01T00:00:00Z")])
    send(settings, "profile-changes", [m for _, m in upserts("disabled")])
    send(settings, "commands", [command("tenant_enable", "2026-03-01T00:00:00Z")])
    send(settings, "profile-changes", [m for _, m in upserts("enabled")])


def outcome(settings: Settings, group: str) -> tuple[str, set[tuple[str, int, str]], set[str]]:
    """(digest, dead letters of the group, ext ids of the profiles stored)."""
    dead = {
        (str(d.original_partition), int(d.original_offset or 0), str(d.error_class))
        for d in list_dead_letters(settings)
        if d.consumer_group == group
    }
    assert settings.admin_database_url is not None
    with psycopg.connect(settings.admin_database_url) as conn:
        stored = {str(r[0]) for r in conn.execute("SELECT profile_id FROM cdp_profiles")}
    return state_digest(settings)[0], dead, stored


def second_database(stack: Endpoints, template: str, settings: Settings) -> Iterator[Settings]:
    with fresh_database(stack, template) as urls:
        yield settings.with_overrides(database_url=urls.app_url, admin_database_url=urls.admin_url)


def test_disable_and_enable_hold_from_their_publish_time_in_either_order(
    settings: Settings, stack: Endpoints, db_template: str
) -> None:
    publish_story(settings)

    # commands first: the whole commands topic is applied, then the data is judged against it
    commands_first = settings.group_id + "-cf"
    Engine(settings, HANDLERS, topics=["commands"], group=commands_first).run(until_idle=1.0)
    Engine(settings, HANDLERS, group=commands_first).run(until_idle=1.5)
    first = outcome(settings, commands_first)

    # data first, into another database: the data engine reads the profile changes while the
    # commands are unread in its group, so they wait until a commands consumer joins the group
    for other in second_database(stack, db_template, settings):
        data_first = settings.group_id + "-df"
        batches: list[BatchStats] = []
        data = Engine(
            other, HANDLERS, topics=["profile-changes"], group=data_first, on_batch=batches.append
        )
        runner = threading.Thread(target=data.run, kwargs={"until_idle": 3.0})
        runner.start()
        deadline = time.monotonic() + 60
        while not any(b.deferred for b in batches) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(b.deferred for b in batches), "the data must have been read before commands"
        assert sum(b.applied + b.dead_lettered for b in batches) == 0
        # the data keys (never held back) with the commands
        keys_and_commands = ["commands", "profile-keys"]
        Engine(other, HANDLERS, topics=keys_and_commands, group=data_first).run(until_idle=2.0)
        runner.join(120)
        assert not runner.is_alive()
        second = outcome(other, data_first)

    assert len(first[1]) == PER_PHASE
    assert {d[2] for d in first[1]} == {"disabled_tenant"}
    assert first[1] == second[1]
    assert (
        first[2]
        == second[2]
        == {m["profile_id"] for phase in ("before", "enabled") for _, m in upserts(phase)}
    )
    assert first[0] == second[0]
