"""Dispatch fan-out (issue 5): one delivery request per member of a sealed snapshot."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from leo_activation.handling import ApplyContext, ApplyResult


def fan_out_waiting(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, snapshot_id: uuid.UUID, ctx: ApplyContext
) -> ApplyResult:
    """Fan out every dispatch that was waiting for ``snapshot_id`` to seal."""
    return ApplyResult()
