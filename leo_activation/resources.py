"""Where the shipped contracts live: `schemas/` and `sql/` beside the package in a checkout,
inside it in an installed wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import LiteralString

_PACKAGE = Path(__file__).resolve().parent


def _locate(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the {name}/ folder next to or inside {_PACKAGE}")


def schemas_dir() -> Path:
    return _locate("schemas")


def sql_dir() -> Path:
    return _locate("sql")


@cache
def sql_text(relative: str) -> LiteralString:
    """The text of one file under sql/, e.g. ``queries/receipts/insert.sql``.

    Typed as a literal: these files ship with the package and are never built from input."""
    text: LiteralString = (sql_dir() / relative).read_text(encoding="utf-8")
    return text
