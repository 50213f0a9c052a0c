"""Where the benchmarks run: the local stack, fresh databases cloned from a migrated template, and
unique topic prefixes, all cleaned up at the end of a run."""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka.admin import AdminClient
from psycopg import errors, sql

from leo_activation import db
from leo_activation.dev import citus
from leo_activation.dev.stack import Endpoints
from leo_activation.migrate import ensure_app_role, migrate, schema_checksum
from leo_activation.settings import Settings

FIXED_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Database:
    name: str
    admin_url: str  # the owner / superuser
    app_url: str  # the application role (RLS applies)


@dataclass
class BenchEnv:
    endpoints: Endpoints
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    databases: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    _template: str | None = None

    @functools.cached_property
    def distributed(self) -> bool:
        """The endpoints' database is a Citus cluster's."""
        return bool(citus.node_dsns(self.endpoints.admin_database_url))

    # ------------------------------------------------------------------ databases
    def template(self) -> str:
        if self._template is None and self.distributed:
            self._template = citus.template(
                self.endpoints.admin_database_url,
                self.endpoints.database_url,
                citus.template_name("leo_bench_ctpl_"),
            )
        if self._template is None:
            name = f"leo_bench_tpl_{schema_checksum()[:12]}"
            admin = self.endpoints.admin_database_url
            with db.connect(admin, autocommit=True) as conn:
                found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if found.fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            migrate(
                db.with_database(admin, name),
                db.with_database(self.endpoints.database_url, name),
            )
            self._template = name
        return self._template

    def fresh_database(self, label: str) -> Database:
        """A new, empty, migrated database (a file copy of the template)."""
        name = f"leo_bench_{self.run_id}_{label}"
        admin = self.endpoints.admin_database_url
        database = Database(
            name, db.with_database(admin, name), db.with_database(self.endpoints.database_url, name)
        )
        self.databases.append(name)
        if self.distributed:
            citus.create_database(admin, name, template=self.template())
            # database grants and settings are not templated; the schema is the template's
            migrate(database.admin_url, database.app_url)
            return database
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.template())
        )
        with db.connect(admin, autocommit=True) as conn:
            for attempt in range(20):
                try:
                    conn.execute(statement)
                    break
                except errors.ObjectInUse:
                    time.sleep(0.1 * (attempt + 1))
        with db.connect(database.admin_url, autocommit=True) as conn:
            ensure_app_role(conn, database.app_url)  # database grants are not templated
        return database

    def add_tenants(self, database: Database, tenants: list[uuid.UUID]) -> None:
        """Register tenants as the application role, each in its own context (as the product)."""
        with db.connect(database.app_url) as conn:
            for i, tenant in enumerate(tenants):
                with db.tenant_transaction(conn, tenant):
                    conn.execute(
                        "INSERT INTO tenant (tenant_id, tenant_name, status, created_at, "
                        "updated_at) VALUES (%s, %s, 'active', %s, %s)",
                        (tenant, f"bench tenant {i}", FIXED_TIME, FIXED_TIME),
                    )

    # ------------------------------------------------------------------ Kafka
    def prefix(self, label: str) -> str:
        """A topic prefix of this run (its topics are deleted at cleanup)."""
        prefix = f"bench{self.run_id}{label}."
        self.prefixes.append(prefix)
        return prefix

    def settings(self, database: Database, prefix: str, group: str, **overrides: Any) -> Settings:
        base = Settings(
            kafka_bootstrap=self.endpoints.kafka_bootstrap,
            database_url=database.app_url,
            admin_database_url=database.admin_url,
            topic_prefix=prefix,
            group_id=f"bench-{self.run_id}-{group}",
            topic_replication_factor=1,  # the local single-broker stack
            topic_min_insync_replicas=1,
        )
        return base.with_overrides(**overrides)

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, keep: bool = False) -> None:
        if keep:
            return
        admin = self.endpoints.admin_database_url
        if self.distributed:
            for name in self.databases:
                with contextlib.suppress(Exception):
                    citus.drop_database(admin, name)
            self.databases.clear()
        with db.connect(admin, autocommit=True) as conn:
            for name in self.databases:
                with contextlib.suppress(Exception):
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
        client = AdminClient({"bootstrap.servers": self.endpoints.kafka_bootstrap})
        with contextlib.suppress(Exception):
            topics = [
                t
                for t in client.list_topics(timeout=10).topics
                if any(t.startswith(p) for p in self.prefixes)
            ]
            if topics:
                for future in client.delete_topics(topics, operation_timeout=30).values():
                    with contextlib.suppress(Exception):
                        future.result(timeout=30)
