"""Set-based writes as the application role.

PostgreSQL refuses ``COPY FROM`` into a table with row-level security for a role subject to it, so
a batch is COPYed into a per-session temporary staging table shaped like the target (no RLS on a
temp table its own role created) and moved with one ``INSERT … SELECT`` that the policies check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from leo_activation.resources import sql_text


def stage(
    conn: psycopg.Connection[Any],
    like_table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> str:
    """COPY ``rows`` into ``stage_<like_table>`` (emptied at commit); returns the stage's name."""
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
        for row in rows:
            writer.write_row(row)
    return stage_name
