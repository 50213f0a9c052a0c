"""`leo-activation publish`: JSON Lines validated whole before anything is produced."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from leo_activation.cli import main
from leo_activation.dev import corpus
from leo_activation.settings import Settings
from tests.fix_app import read_topic


def _args(settings: Settings, *rest: str) -> list[str]:
    assert settings.kafka_bootstrap is not None
    return ["--bootstrap", settings.kafka_bootstrap, "--topic-prefix", settings.topic_prefix, *rest]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_publish_produces_every_line_with_its_key(settings: Settings, tmp_path: Path) -> None:
    receipts = corpus.build(5, n_tenants=1, n_profiles=1, n_receipts=6, duplicate_rate=0).topics[
        "receipts"
    ]
    path = _write(tmp_path / "r.jsonl", [json.dumps(r) for r in receipts])
    assert main(_args(settings, "publish", "--topic", "receipts", str(path))) == 0
    published = read_topic(settings, "receipts")
    assert len(published) == len(receipts)
    keys = {m.key() for m in published}
    assert keys == {f"{r['tenant_id']}:{r['delivery_id']}".encode() for r in receipts}


def test_a_bad_line_is_named_and_nothing_is_sent(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = corpus.build(6, n_tenants=1, n_profiles=1, n_receipts=3, duplicate_rate=0).topics[
        "receipts"
    ]
    bad = {**good[0], "delivery_id": "not-a-uuid"}
    lines = [json.dumps(good[0]), json.dumps(good[1]), json.dumps(bad), json.dumps(good[2])]
    path = _write(tmp_path / "bad.jsonl", lines)
    assert main(_args(settings, "publish", "--topic", "delivery.receipts", str(path))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{path}:3:" in err
    assert "delivery_id" in err
    assert read_topic(settings, "receipts") == []


def test_not_json_and_stdin(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"type": "tenant_register"\n'))
    assert main(_args(settings, "publish", "--topic", "commands", "-")) == 1
    assert "<stdin>:1:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--topic", "nope", "x.jsonl"],
        ["publish", "--topic", "dead-letters", "x.jsonl"],
        ["publish", "--topic", "receipts", "/does/not/exist.jsonl"],
        ["publish", "x.jsonl"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    settings: Settings, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(settings, *argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("leo-activation:")
