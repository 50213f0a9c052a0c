"""One frozen settings object, read once at start from LEO_* environment variables.

Every CLI flag that overrides a setting names its variable in ``--help``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import SecretStr

TOPIC_SUFFIXES = {
    "profile-changes": "cdp.profile-changes",
    "commands": "activation.commands",
    "delivery-requests": "delivery.requests",
    "receipts": "delivery.receipts",
    "dead-letters": "dead-letters",
}
#: topics this product writes (never reads as input); ``Settings.output_prefix`` redirects them
OUTPUT_TOPICS = frozenset({"delivery-requests", "dead-letters"})


class SettingsError(ValueError):
    """A configuration value is missing or malformed (a usage error: exit 2)."""


# Messages per batch: one database transaction per tenant and one Kafka transaction per batch,
# so larger batches spread their fixed costs thinner, at the price of more memory and of more
# work redone after a crash (docs/performance.md has the measurement).
DEFAULT_BATCH_SIZE = 5000


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    admin_database_url: str | None = None
    schema_registry_url: str | None = None
    topic_prefix: str = "leo."
    group_id: str = "leo-activation"
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_timeout_s: float = 0.5
    metrics_port: int | None = None
    # When set, the output topics (OUTPUT_TOPICS) get this prefix instead of ``topic_prefix``:
    # ``verify`` rebuilds from the live input topics without writing to the live outputs.
    output_prefix: str | None = None
    # partitions of the topics ``ensure_topics`` creates (the dead-letter topic always has one)
    topic_partitions: int = 6
    extra_kafka: Mapping[str, Any] = field(default_factory=dict)
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_config_file: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_location: str | None = None
    topic_replication_factor: int = 3
    topic_min_insync_replicas: int = 2
    kafka_startup_timeout_s: float = 120.0

    def topic(self, logical: str) -> str:
        """Physical topic name for a logical one (``receipts`` -> ``leo.delivery.receipts``)."""
        prefix = self.topic_prefix
        if self.output_prefix is not None and logical in OUTPUT_TOPICS:
            prefix = self.output_prefix
        try:
            return prefix + TOPIC_SUFFIXES[logical]
        except KeyError:
            names = ", ".join(TOPIC_SUFFIXES)
            raise SettingsError(f"unknown topic {logical!r}; expected one of: {names}") from None

    def logical_topic(self, physical: str) -> str:
        for logical, suffix in TOPIC_SUFFIXES.items():
            if physical == self.topic_prefix + suffix:
                return logical
        raise SettingsError(f"topic {physical!r} is not one of this deployment's topics")

    def resolve_topic(self, name: str) -> str:
        """Accept a logical name, a suffix (``delivery.receipts``) or a full physical name."""
        if name in TOPIC_SUFFIXES:
            return self.topic(name)
        for suffix in TOPIC_SUFFIXES.values():
            if name in (suffix, self.topic_prefix + suffix):
                return self.topic_prefix + suffix
        names = ", ".join(TOPIC_SUFFIXES)
        raise SettingsError(f"unknown topic {name!r}; expected one of: {names}")

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise SettingsError(
                "no Kafka bootstrap: set LEO_KAFKA_BOOTSTRAP or pass --bootstrap "
                '(eval "$(leo-activation dev status --env)" for the local stack)'
            )
        return self.kafka_bootstrap

    def require_database(self) -> str:
        if not self.database_url:
            raise SettingsError(
                "no database: set LEO_DATABASE_URL or pass --database-url "
                '(eval "$(leo-activation dev status --env)" for the local stack)'
            )
        return self.database_url

    def require_admin_database(self) -> str:
        if not self.admin_database_url:
            raise SettingsError(
                "no admin database: set LEO_ADMIN_DATABASE_URL or pass --admin-database-url"
            )
        return self.admin_database_url

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    batch_size = _int(env, "LEO_BATCH_SIZE", DEFAULT_BATCH_SIZE)
    topic_partitions = _int(env, "LEO_TOPIC_PARTITIONS", 6)
    assert batch_size is not None
    assert topic_partitions is not None
    return Settings(
        kafka_bootstrap=env.get("LEO_KAFKA_BOOTSTRAP") or None,
        database_url=env.get("LEO_DATABASE_URL") or None,
        admin_database_url=env.get("LEO_ADMIN_DATABASE_URL") or None,
        schema_registry_url=env.get("LEO_SCHEMA_REGISTRY_URL") or None,
        topic_prefix=env.get("LEO_TOPIC_PREFIX", "leo."),
        group_id=env.get("LEO_GROUP_ID", "leo-activation"),
        batch_size=batch_size,
        batch_timeout_s=float(env.get("LEO_BATCH_TIMEOUT_S", "0.5")),
        metrics_port=_int(env, "LEO_METRICS_PORT", None),
        topic_partitions=topic_partitions,
        extra_kafka={
            name[len("LEO_KAFKA__") :].lower().replace("_", "."): value
            for name, value in env.items()
            if name.startswith("LEO_KAFKA__")
        },
        kafka_security_protocol=env.get("LEO_KAFKA_SECURITY_PROTOCOL") or None,
        kafka_sasl_mechanism=env.get("LEO_KAFKA_SASL_MECHANISM") or None,
        kafka_sasl_username=env.get("LEO_KAFKA_SASL_USERNAME") or None,
        kafka_sasl_password=_secret(env, "LEO_KAFKA_SASL_PASSWORD"),
        kafka_ssl_ca_location=env.get("LEO_KAFKA_SSL_CA_LOCATION") or None,
        kafka_ssl_certificate_location=env.get("LEO_KAFKA_SSL_CERTIFICATE_LOCATION") or None,
        kafka_ssl_key_location=env.get("LEO_KAFKA_SSL_KEY_LOCATION") or None,
        kafka_ssl_key_password=_secret(env, "LEO_KAFKA_SSL_KEY_PASSWORD"),
        kafka_config_file=env.get("LEO_KAFKA_CONFIG") or None,
        schema_registry_username=env.get("LEO_SCHEMA_REGISTRY_USERNAME") or None,
        schema_registry_password=_secret(env, "LEO_SCHEMA_REGISTRY_PASSWORD"),
        schema_registry_ca_location=env.get("LEO_SCHEMA_REGISTRY_CA_LOCATION") or None,
        topic_replication_factor=_int(env, "LEO_TOPIC_REPLICATION_FACTOR", 3) or 3,
        topic_min_insync_replicas=_int(env, "LEO_TOPIC_MIN_INSYNC_REPLICAS", 2) or 2,
        kafka_startup_timeout_s=float(env.get("LEO_KAFKA_STARTUP_TIMEOUT_S") or 120.0),
    )


def _secret(env: Mapping[str, str], name: str) -> SecretStr | None:
    raw = env.get(name)
    return SecretStr(raw) if raw else None
