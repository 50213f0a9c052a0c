"""Set-based writes as the application role.

PostgreSQL refuses ``COPY FROM`` into a table with row-level security for a role subject to it, so
a batch is COPYed into a per-session temporary staging table shaped like the target (no RLS on a
temp table its own role created) and moved with one ``INSERT … SELECT`` that the policies check.

The rows arrive as ready COPY text lines (``copy_line``, or the native extension's, which writes
the same bytes): the apply thread only joins and sends them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from leo_activation.resources import sql_text

# COPY's text format: a backslash and the control characters that would end a field or a line
_COPY_ESCAPES = {
    "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f",
    "\v": "\\v",
}  # fmt: skip
_COPY_SPECIAL = re.compile("[\\\\\t\n\r\b\f\v]")


def _escape(match: re.Match[str]) -> str:
    return _COPY_ESCAPES[match.group()]


# an array element written bare; anything else is quoted (as psycopg's list dumper does)
_BARE_ELEMENT = re.compile(r'[^"{},\\ \t\n\r\f\v]+')


def _array_element(item: str) -> str:
    if _BARE_ELEMENT.fullmatch(item) and not (item.isascii() and item.lower() == "null"):
        return item
    return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _copy_field(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = "\\x" + value.hex()
    elif isinstance(value, list):
        text = "{" + ",".join(_array_element(str(item)) for item in value) + "}"
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:  # int, uuid.UUID
        text = str(value)
    # most fields hold nothing to escape: searched for at C speed, substituted only if found
    return _COPY_SPECIAL.sub(_escape, text) if _COPY_SPECIAL.search(text) else text


def copy_line(row: Sequence[Any]) -> bytes:
    """One row as a line of ``COPY … FROM STDIN`` text: ``None``, text, integers, uuids, aware
    datetimes (ISO 8601), bytes (bytea hex) and lists of text or uuids (an array literal)."""
    return ("\t".join(map(_copy_field, row)) + "\n").encode()


def plain_array(values: Iterable[str | int]) -> str:
    """An array literal of values whose text needs no quoting (uuids, integers), for a parameter
    the statement casts (``%(ids)s::uuid[]``): one string for the driver to send, where a list
    would be adapted element by element."""
    return "{" + ",".join(map(str, values)) + "}"


def extended(line: bytes, more: bytes) -> bytes:
    """The COPY line ``line`` with the fields of the COPY line ``more`` added at its end."""
    return line[:-1] + b"\t" + more


def stage(
    conn: psycopg.Connection[Any],
    like_table: str,
    columns: Sequence[str],
    lines: Iterable[bytes],
) -> str:
    """COPY ``lines`` (``copy_line``) into ``stage_<like_table>`` (emptied at commit); returns the
    stage's name."""
    stage_name = f"stage_{like_table}"
    conn.execute(
        sql.SQL(sql_text("queries/bulk/stage_table.sql")).format(
            sql.Identifier(stage_name), sql.Identifier(like_table)
        )
    )
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(stage_name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(copy) as writer:
        writer.write(b"".join(lines))
    return stage_name
