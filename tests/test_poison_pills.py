"""Poison pills on the real broker: a message nobody here wrote is dead-lettered, once, with its
class, and the consumer goes on; a dead letter always fits its topic; ``publish`` names every bad
line in one line each."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from leo_activation.codec import SingleObjectCodec
from leo_activation.contracts import from_json
from leo_activation.errors import LeoError
from leo_activation.kafka import ensure_topics
from leo_activation.ops.dead_letters import redrive
from leo_activation.producers.dead_letters import MAX_DEAD_LETTER_BYTES
from leo_activation.producers.publish import publish
from leo_activation.settings import Settings
from tests.fix_app import drain, read_topic, totals
from tests.test_poison_fuzz import _raw_receipt

CODEC = SingleObjectCodec()


def test_poison_pills_are_dead_lettered_once_and_the_good_receipts_applied(
    settings: Settings,
) -> None:
    tenant = "7d5a2c3e-0b1f-4a57-9a4e-2f6f3a9d1c11"  # the tenant of _raw_receipt
    ensure_topics(settings)
    publish(settings, "commands", [from_json("commands", {
        "type": "tenant_register", "tenant_id": tenant, "tenant_name": "T",
        "occurred_at": "2026-01-01T00:00:00Z",
    })])  # fmt: skip
    huge = _raw_receipt(provider_response='{"k":"' + "x" * 1_009_900 + '"}')
    assert len(huge) > 1_000_000  # more than the product's producer would send
    bad = {
        "deep": _raw_receipt(provider_response="[" * 30_000 + "]" * 30_000),
        "huge": huge,
        "uuid": _raw_receipt(delivery_id="{12345678-1234-1234-1234-12345678901g}"),
    }
    good = [_raw_receipt(delivery_id=str(uuid.uuid4()), status="delivered") for _ in range(4)]
    # raw, through a producer that allows what the broker's default limit accepts
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap,
                         "message.max.bytes": 2_000_000})  # fmt: skip
    topic = settings.topic("receipts")
    order = [good[0], bad["deep"], good[1], bad["huge"], good[2], bad["uuid"], good[3]]
    for value in order:
        producer.produce(topic, value=value, key=b"k", headers=[("leo.correlation_id", b"c1")])
    assert producer.flush(30) == 0

    stats = totals(drain(settings))  # returns: the consumer did not exit on any of them

    assert (stats.applied, stats.dead_lettered) == (1 + 4, 3)  # the registration, 4 receipts
    dead = read_topic(settings, "dead-letters")
    letters = [CODEC.decode("dead-letters", m.value())[1] for m in dead]
    by_offset = {r["original_offset"]: r for r in letters}
    assert len(letters) == 3
    assert [by_offset[o]["error_class"] for o in (1, 3, 5)] == ["bad_json", "oversize", "bad_uuid"]
    for offset, record in by_offset.items():
        assert record["original_topic"] == topic
        assert record["original_value_length"] == len(order[offset])
        assert record["original_value_sha256"] == hashlib.sha256(order[offset]).hexdigest()
        assert record["original_headers"] == [{"name": "leo.correlation_id", "value": b"c1"}]
        assert record["original_value_truncated"] == (offset == 3)
        if offset != 3:
            assert record["original_value"] == order[offset]
    cut = by_offset[3]
    assert 0 < len(cut["original_value"]) < MAX_DEAD_LETTER_BYTES
    assert huge.startswith(cut["original_value"])
    assert "provider_response" in cut["reason"]

    # a truncated dead letter is never re-driven as if it were the message
    ident = str(next(m.offset() for m, r in zip(dead, letters, strict=True)
                     if r["original_offset"] == 3))  # fmt: skip
    with pytest.raises(LeoError, match="cannot be re-driven") as refused:
        redrive(settings, [ident])
    assert "\n" not in str(refused.value)
    assert len(read_topic(settings, "receipts")) == len(order)


def test_publish_names_every_bad_line_without_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    good = {"type": "tenant_register", "tenant_id": str(uuid.uuid4()), "tenant_name": "T",
            "occurred_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    lines = [
        json.dumps(good),
        '{"type": "tenant_register", "tenant_name": ' + "[" * 30_000 + "]" * 30_000 + "}",
        json.dumps({**good, "tenant_name": "\ud83e"}),  # json.dumps writes it as \ud83e
        json.dumps({**good, "tenant_name": 12}),
        json.dumps({**good, "reason": [[[[1]]]]}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert settings.kafka_bootstrap
    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", "--bootstrap", settings.kafka_bootstrap,
         "--topic-prefix", settings.topic_prefix, "publish", "--topic", "commands", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    err = done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    assert len(err) == 4
    assert [f"{path}:{n}:" in line for n, line in zip((2, 3, 4, 5), err, strict=True)] == [True] * 4
    assert "nests deeper" in err[0]
    assert "surrogate" in err[1]
    assert "tenant_name" in err[2]
    assert "nothing was published (4 bad lines)" in err[-1]
    assert read_topic(settings, "commands") == []
