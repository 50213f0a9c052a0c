"""No cross-tenant inference from the planner: row-level security hides other tenants' rows, and
their tenant ids and personal data must not come back through ``EXPLAIN`` row estimates either.

The probe is an attacker's: the application role with no tenant set moves a value across the
range of a column and reads the estimated row count; with statistics on the column, the estimate
steps at each histogram bound and most common value, which gives the values away one binary
search at a time. Here the estimates must not move, whatever the value probed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from leo_activation.db import connect, tenant_transaction
from tests.fix_db import DbUrls
from tests.test_schema import NS, insert, seed_world

TENANTS = [uuid.uuid5(NS, f"probe-tenant-{i}") for i in range(40)]
PROFILES_PER_TENANT = 5
# (table, column) pairs holding personal data; every table's tenant_id is probed as well
PERSONAL = (
    ("cdp_profiles", "email"),
    ("cdp_profiles", "mobile_number"),
    ("cdp_profiles", "ext_id"),
    ("cdp_profile_version", "mobile_number"),
    ("delivery_log", "destination"),
    ("tenant", "tenant_name"),
)
# personal too, but JSON: not probed with text values, only checked in the catalog
STATISTICS_OFF = (*PERSONAL, ("cdp_profiles", "consents"), ("cdp_profile_version", "consents"))


def phone(tenant: int, profile: int) -> str:
    return f"+849{tenant:02d}{profile:05d}"


@pytest.fixture
def probed(db: DbUrls) -> Iterator[psycopg.Connection[Any]]:
    """Forty tenants' worlds with distinct phone numbers, analysed; then the application role
    with no tenant set, the attacker's seat."""
    for t, tenant in enumerate(TENANTS):
        seed_world(db.app_url, tenant)
        with connect(db.app_url) as conn, tenant_transaction(conn, tenant):
            for p in range(PROFILES_PER_TENANT):
                number = phone(t, p)
                row = {
                    "tenant_id": tenant,
                    "profile_id": uuid.uuid5(tenant, f"probe-{p}"),
                    "ext_id": f"crm-{t}-{p}",
                    "email": f"person{t}.{p}@example.com",
                    "mobile_number": number,
                    "cdp_version": 1,
                    "content_hash": b"\x00",
                    "updated_at": "2025-01-01T00:00:00Z",
                }
                insert(conn, "cdp_profiles", row)
                insert(
                    conn,
                    "cdp_profile_version",
                    {
                        "tenant_id": tenant,
                        "profile_id": row["profile_id"],
                        "version": 1,
                        "content_hash": bytes(32),
                        "mobile_number": number,
                        "occurred_at": "2025-01-01T00:00:00Z",
                    },
                )
    with connect(db.admin_url, autocommit=True) as admin:
        admin.execute("ANALYZE")
    with connect(db.app_url, autocommit=True) as attacker:
        yield attacker


def estimate(conn: psycopg.Connection[Any], table: str, column: str, op: str, value: str) -> int:
    operator: LiteralString = {"<": "<", "=": "="}[op]
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {} " + operator + " {}")
    row = conn.execute(
        query.format(sql.Identifier(table), sql.Identifier(column), sql.Literal(value))
    ).fetchone()
    assert row is not None
    return int(row[0][0]["Plan"]["Plan Rows"])


def rls_tables(conn: psycopg.Connection[Any], *, partitions: bool) -> list[str]:
    """Tables under row-level security; partitions are read only through their parent."""
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relrowsecurity AND relkind IN ('r', 'p') "
        "AND relnamespace = 'public'::regnamespace AND (%s OR NOT relispartition) "
        "ORDER BY relname",
        (partitions,),
    ).fetchall()
    return [str(name) for (name,) in rows]


def test_tenant_ids_cannot_be_binary_searched(probed: psycopg.Connection[Any]) -> None:
    probes = sorted(str(t) for t in TENANTS)
    probes += ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    for table in rls_tables(probed, partitions=False):
        for op in ("<", "="):
            estimates = {estimate(probed, table, "tenant_id", op, value) for value in probes}
            assert len(estimates) == 1, (table, op, estimates)


def test_personal_values_cannot_be_read_back(probed: psycopg.Connection[Any]) -> None:
    numbers = [phone(t, p) for t in range(len(TENANTS)) for p in range(PROFILES_PER_TENANT)]
    probes = {
        "mobile_number": [*numbers[::7], "+0", "+9"],
        "email": [f"person{t}.0@example.com" for t in range(0, len(TENANTS), 5)] + ["a", "z"],
        "ext_id": [f"crm-{t}-1" for t in range(0, len(TENANTS), 5)] + ["a", "z"],
        "destination": ["a", "m", "z"],
        "tenant_name": [f"tenant {t}" for t in sorted(map(str, TENANTS))[::5]] + ["a", "z"],
    }
    for table, column in PERSONAL:
        for op in ("<", "="):
            estimates = {estimate(probed, table, column, op, v) for v in probes[column]}
            assert len(estimates) == 1, (table, column, op, estimates)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(alphabet="+0123456789", min_size=1, max_size=14))
def test_no_phone_number_moves_the_estimate(probed: psycopg.Connection[Any], value: str) -> None:
    baseline = estimate(probed, "cdp_profiles", "mobile_number", "<", "+")
    assert estimate(probed, "cdp_profiles", "mobile_number", "<", value) == baseline
    assert estimate(probed, "cdp_profiles", "mobile_number", "=", value) == estimate(
        probed, "cdp_profiles", "mobile_number", "=", "+"
    )


def test_analyze_keeps_no_statistics_of_tenant_ids_or_personal_data(db: DbUrls) -> None:
    """Checked in the catalog as the owner, so a table or column added later without
    ``SET STATISTICS 0`` fails here even before anyone probes it."""
    with connect(db.admin_url, autocommit=True) as admin:
        for table in rls_tables(admin, partitions=True):
            for column in ["tenant_id", *(c for t, c in STATISTICS_OFF if t == table)]:
                row = admin.execute(
                    "SELECT attstattarget FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attname = %s",
                    (table, column),
                ).fetchone()
                assert row is not None, (table, column)
                assert row[0] == 0, (table, column, row)
