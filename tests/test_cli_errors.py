"""Mistakes an operator makes, driven through the CLI as a subprocess: each is one line on stderr
with the documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit code, stderr) of ``leo-activation ARGS`` in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "leo_activation", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stderr


def assert_one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("topic", ["dead-letters", "delivery-requests"])
def test_consume_refuses_an_output_topic(topic: str) -> None:
    code, stderr = run_cli("consume", "--topics", "receipts", topic)
    assert code == 2
    line = assert_one_line(stderr)
    assert topic in line
    assert "commands, profile-changes, receipts" in line
