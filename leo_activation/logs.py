"""Logs of every command on stderr: human-readable text on a terminal, one JSON object per line
otherwise (``--log-format text|json|auto``, ``--log-level``; LEO_LOG_FORMAT, LEO_LOG_LEVEL).

A JSON line has ``time`` (UTC, ISO-8601), ``level``, ``logger`` and ``message``; fields passed
with ``extra={...}`` are added at the top level (the engine's per-batch line carries
``event="batch"`` and its counts, a dead letter carries ``event="dead_letter"`` with its
coordinates, error class and ``correlation_id``), and an exception adds ``exc_info``. A text line
is the local time, the level, the message and the same extra fields as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newlines inside)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``12:00:01 WARNING message key=value …`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items() if k != "event")
        line = f"{when} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was when configured:
    a caller (pytest, a test running ``main`` in-process) may have swapped it since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure(log_format: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route the root logger to ``stream`` (default: stderr) in ``log_format``: ``auto`` is text
    on a terminal and JSON otherwise. Replaces the handler an earlier call installed, and only
    that one (a test harness's stay)."""
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    if log_format == "auto":
        log_format = "text" if handler.stream.isatty() else "json"
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


_HANDLER_NAME = "leo_activation"
