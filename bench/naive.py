"""What a naive consumer does with one message: plain INSERTs with the same row content as the
product's handlers, no staging, no batching (the per-message transaction is in measure.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from leo_activation.consumers.profile_changes import (
    MEMBERSHIP_COLUMNS,
    PROFILE_COLUMNS,
    membership_row,
    profile_row,
)
from leo_activation.consumers.receipts import COLUMNS as RECEIPT_COLUMNS
from leo_activation.consumers.receipts import receipt_row
from leo_activation.engine.handler import Envelope


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"


RECEIPT_INSERT = (
    _insert("delivery_log", RECEIPT_COLUMNS) + " ON CONFLICT (tenant_id, log_id) DO NOTHING"
)
PROFILE_UPSERT = (
    _insert("cdp_profiles", PROFILE_COLUMNS)
    + " ON CONFLICT (tenant_id, profile_id) DO UPDATE SET ext_id = EXCLUDED.ext_id,"
    " email = EXCLUDED.email, mobile_number = EXCLUDED.mobile_number,"
    " push_token = EXCLUDED.push_token, data_labels = EXCLUDED.data_labels,"
    " raw_attributes = EXCLUDED.raw_attributes, cdp_version = EXCLUDED.cdp_version,"
    " content_hash = EXCLUDED.content_hash, updated_at = EXCLUDED.updated_at"
    " WHERE (cdp_profiles.cdp_version, cdp_profiles.content_hash)"
    " < (EXCLUDED.cdp_version, EXCLUDED.content_hash)"
)
MEMBERSHIP_INSERT = (
    _insert("segment_membership_change", MEMBERSHIP_COLUMNS)
    + " ON CONFLICT (tenant_id, segment_key, sequence) DO NOTHING"
)
VERSION_INSERT = (
    "INSERT INTO cdp_profile_version (tenant_id, profile_id, version, content_hash, ext_id, email,"
    " mobile_number, push_token, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
REFRESH_ONE = """
UPDATE cdp_profiles p SET segments = ARRAY(
    SELECT c.segment_key FROM (
        SELECT DISTINCT ON (m.segment_key) m.segment_key, m.action
        FROM segment_membership_change m
        WHERE m.tenant_id = p.tenant_id AND m.profile_id = p.profile_id
        ORDER BY m.segment_key, m.sequence DESC) c
    WHERE c.action = 'join' ORDER BY c.segment_key)
WHERE p.tenant_id = leo_current_tenant() AND p.profile_id = %s
"""


def receipt(conn: psycopg.Connection[Any], e: Envelope) -> None:
    conn.execute(RECEIPT_INSERT, receipt_row(e, str(e.tenant_id)))


def profile_change(conn: psycopg.Connection[Any], e: Envelope) -> None:
    if e.kind == "profile_upsert":
        row = profile_row(e)
        conn.execute(PROFILE_UPSERT, row)
        conn.execute(VERSION_INSERT, (*row[:2], row[8], row[9], *row[2:6], row[10]))
    else:
        row = membership_row(e)
        conn.execute(MEMBERSHIP_INSERT, row)
        conn.execute(REFRESH_ONE, (row[3],))
