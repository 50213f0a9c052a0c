"""One frozen, validated settings object, read once at start from LEO_* environment variables.

Every field is range-checked when the object is built; a bad value is a ``SettingsError`` naming
the variable (or flag), the value and what is allowed. Every CLI flag that overrides a setting
names its variable in ``--help``. Secrets are ``SecretStr`` and the DSNs are shown only through
``mask_dsn``: neither ``repr``, ``str`` nor ``model_dump_json`` of a ``Settings`` holds a password.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import jproperties
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from leo_activation.errors import first_line

TOPIC_SUFFIXES = {
    "profile-changes": "cdp.profile-changes",
    "commands": "activation.commands",
    "delivery-requests": "delivery.requests",
    "receipts": "delivery.receipts",
    "dead-letters": "dead-letters",
    "profile-keys": "privacy.profile-keys",
}
#: topics this product writes (never reads as input); ``Settings.output_prefix`` redirects them
OUTPUT_TOPICS = frozenset({"delivery-requests", "dead-letters"})

ENV_PREFIX = "LEO_"
#: ``LEO_KAFKA__SASL_OAUTHBEARER_CONFIG`` -> librdkafka's ``sasl.oauthbearer.config``
KAFKA_PROPERTY_PREFIX = "LEO_KAFKA__"
#: fields read from a variable other than LEO_<FIELD>
ENV_NAMES = {"kafka_config_file": "LEO_KAFKA_CONFIG"}
#: fields no variable sets: extra_kafka is LEO_KAFKA__* and the properties file; output_prefix is
#: verify's own redirection of its outputs, never a deployment's
_NOT_FROM_ENV = ("extra_kafka", "output_prefix")
#: fields whose CLI flag is not --<field-name>
FLAG_NAMES = {"kafka_bootstrap": "--bootstrap", "group_id": "--group"}
MASK = "***"
# fields shown masked by repr and model_dump: DSNs carry passwords, extras may carry secrets
_MASKED_DSNS = ("database_url", "admin_database_url", "schema_registry_url")
_MASKED = frozenset({*_MASKED_DSNS, "extra_kafka"})


class SettingsError(ValueError):
    """A configuration value is missing or malformed (a usage error: exit 2)."""


# Messages per batch: one database transaction per tenant and one Kafka transaction per batch,
# so larger batches spread their fixed costs thinner, at the price of more memory and of more
# work redone after a crash (docs/performance.md has the measurement).
DEFAULT_BATCH_SIZE = 5000
# A batch is held in memory whole and redone whole after a crash; past this the fixed costs are
# long amortised (docs/performance.md) and only memory and redo grow.
MAX_BATCH_SIZE = 100_000
# tenant transactions a consumer applies side by side, each on a connection of its own
DEFAULT_TENANTS_AT_ONCE = 4
MAX_TENANTS_AT_ONCE = 64


def is_secret_property(key: str) -> bool:
    """Whether a librdkafka property's value is a secret (never printed)."""
    key = key.lower()
    if key == "sasl.oauthbearer.config" or "password" in key or "secret" in key:
        return True
    return "key" in key and "location" not in key


def _existing_file(path: str | None) -> str | None:
    if path is not None and not Path(path).is_file():
        raise ValueError("no such file")
    return path


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _topic_prefix(value: str | None) -> str | None:
    # Kafka topic names are [A-Za-z0-9._-]; a prefix outside that fails only at the first
    # topic creation, far from its cause.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]*", value):
        raise ValueError("not a topic-name prefix")
    return value


FilePath = Annotated[str | None, AfterValidator(_existing_file)]
Seconds = Annotated[float, Field(gt=0), AfterValidator(_finite)]
TopicPrefix = Annotated[str, AfterValidator(_topic_prefix)]
Port = Annotated[int, Field(ge=1, le=65535)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def mask_dsn(dsn: str | None) -> str | None:
    """A DSN (URL or ``key=value`` form) with its password replaced by ``***``, for display.

    Regular expressions rather than a URL parser: a password with an unencoded ``?``, ``#`` or
    ``@`` would otherwise leak into the part the parser takes for the host or the query; the
    userinfo runs to the last ``@``, which masks too much rather than too little.
    """
    if dsn is None:
        return None
    if "://" not in dsn:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", rf"\1{MASK}", dsn)
    dsn = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)(.*)@", rf"\1{MASK}@", dsn, flags=re.S)
    return re.sub(r"([?&]password=)[^&]*", rf"\1{MASK}", dsn)


def dsn_host(dsn: str | None) -> str | None:
    """``host:port/dbname`` of a DSN: where it points, with no user or password."""
    if dsn is None:
        return None
    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # a malformed DSN is reported when it is used, not when it is shown
        return None
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


# The environment ``from_env`` was given, when it is not os.environ, and the fields it was given
# as CLI flags (a bad value is reported under the flag's name).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("leo_environ", default=None)
_FLAGS: ContextVar[frozenset[str]] = ContextVar("leo_flags", default=frozenset())


class _EnvSource(EnvSettingsSource):
    """LEO_<FIELD> variables, plus LEO_KAFKA__<PROPERTY> and the variables in ENV_NAMES."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        return parse_env_vars(
            os.environ if env is None else env,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for field, name in ENV_NAMES.items():
            data.pop(field, None)
            if self.env_vars.get(name.lower()):
                data[field] = self.env_vars[name.lower()]
        for field in _NOT_FROM_ENV:
            data.pop(field, None)
        prefix = KAFKA_PROPERTY_PREFIX.lower()
        extra = {
            name[len(prefix) :].replace("_", "."): value
            for name, value in self.env_vars.items()
            if name.startswith(prefix) and len(name) > len(prefix) and value is not None
        }
        if extra:
            data["extra_kafka"] = extra
        return data


def env_name(field: str) -> str:
    """The environment variable a field is read from."""
    return ENV_NAMES.get(field, ENV_PREFIX + field.upper())


def flag_name(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


class Settings(BaseSettings):
    """Built with keywords (``Settings(batch_size=500)``) the rest still comes from LEO_*."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers (host:port,…)")
    database_url: str | None = Field(None, description="application-role DSN (holds a password)")
    admin_database_url: str | None = Field(
        None, description="owner DSN, used by migrate and the operators' tools (holds a password)"
    )
    schema_registry_url: str | None = Field(None, description="Confluent Schema Registry URL")
    topic_prefix: TopicPrefix = Field("leo.", description="letters, digits, '.', '_', '-'")
    group_id: str = Field("leo-activation", min_length=1, description="a non-empty group id")
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE,
        ge=1,
        le=MAX_BATCH_SIZE,
        description=f"an integer from 1 to {MAX_BATCH_SIZE}",
    )
    batch_timeout_s: Seconds = Field(0.5, description="a number of seconds > 0")
    # A tenant's transaction is a chain of round trips: its connection idles while the consumer
    # runs Python, so more of them side by side keep PostgreSQL busy; each is a connection.
    tenants_at_once: int = Field(
        DEFAULT_TENANTS_AT_ONCE, ge=1, le=MAX_TENANTS_AT_ONCE,
        description=f"an integer from 1 to {MAX_TENANTS_AT_ONCE}",
    )  # fmt: skip
    metrics_port: Port | None = Field(None, description="a TCP port, an integer from 1 to 65535")
    # When set, the output topics (OUTPUT_TOPICS) get this prefix instead of ``topic_prefix``:
    # ``verify`` rebuilds from the live input topics without writing to the live outputs.
    output_prefix: Annotated[str | None, AfterValidator(_topic_prefix)] = None
    # partitions of the topics ``ensure_topics`` creates (the dead-letter topic always has one)
    topic_partitions: int = Field(6, ge=1, le=10_000, description="an integer from 1 to 10000")
    topic_replication_factor: int = Field(3, ge=1, le=100, description="an integer from 1 to 100")
    topic_min_insync_replicas: int = Field(
        2, ge=1, le=100, description="an integer from 1 to 100, at most the replication factor"
    )
    kafka_startup_timeout_s: Seconds = Field(120.0, description="a number of seconds > 0")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = (
        Field(None, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None
    ) = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: FilePath = Field(None, description="an existing file")
    kafka_ssl_certificate_location: FilePath = Field(None, description="an existing file")
    kafka_ssl_key_location: FilePath = Field(None, description="an existing file")
    kafka_ssl_key_password: SecretStr | None = None
    # a Java-style .properties file of librdkafka properties, merged under LEO_KAFKA__* into
    # ``extra_kafka``
    kafka_config_file: FilePath = Field(None, description="an existing .properties file")
    # librdkafka properties from LEO_KAFKA__* and the properties file; the named kafka_* settings
    # take precedence over them (kafka.py)
    extra_kafka: dict[str, Any] = Field(default_factory=dict)
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_ca_location: FilePath = Field(None, description="an existing file")
    log_format: Literal["auto", "text", "json"] = Field(
        "auto", description="auto, text or json (auto: text on a terminal, else json)"
    )
    # None: INFO for the long-running services (consume, gateway), WARNING for one-shot commands
    log_level: LogLevel | None = Field(None, description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    progress_interval_s: Seconds = Field(30.0, description="a number of seconds > 0")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvSource(settings_cls)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        # upper-cased only when that makes it valid, so an error shows the value as given
        if isinstance(value, str) and value.upper() in get_args(LogLevel):
            return value.upper()
        return value

    @model_validator(mode="before")
    @classmethod
    def _merge_config_file(cls, data: Any) -> Any:
        path = data.get("kafka_config_file") if isinstance(data, dict) else None
        if path and Path(path).is_file():
            props = jproperties.Properties()
            try:
                props.load(Path(path).read_bytes(), "utf-8")
            except (OSError, UnicodeDecodeError, jproperties.ParseError) as exc:
                msg = f"kafka_config_file: {path} is not a properties file ({first_line(exc)})"
                raise ValueError(msg) from None
            from_file = {key: value.data for key, value in props.items()}
            data = {**data, "extra_kafka": {**from_file, **(data.get("extra_kafka") or {})}}
        return data

    @model_validator(mode="after")
    def _min_isr_fits(self) -> Settings:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"topic_min_insync_replicas: {self.topic_min_insync_replicas} is more than "
                f"LEO_TOPIC_REPLICATION_FACTOR={self.topic_replication_factor}"
            )
        return self

    @field_serializer(*_MASKED_DSNS)
    def _masked_dsn(self, value: str | None) -> str | None:
        return mask_dsn(value)

    @field_serializer("extra_kafka")
    def _masked_extra(self, value: dict[str, Any]) -> dict[str, Any]:
        return {k: MASK if is_secret_property(k) else v for k, v in value.items()}

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        masked = self.model_dump(include=set(_MASKED))
        for name, value in super().__repr_args__():
            yield name, masked.get(name, value) if name in _MASKED else value

    def topic(self, logical: str, *, output: bool = False) -> str:
        """Physical topic name for a logical one (``receipts`` -> ``leo.delivery.receipts``).
        ``output``: the topic a consumer writes to (the keys topic is read and written)."""
        prefix = self.topic_prefix
        if self.output_prefix is not None and (output or logical in OUTPUT_TOPICS):
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
        """A copy with the given fields replaced (None leaves a field as it is), validated
        again; a bad value is reported under its CLI flag."""
        given = {k: v for k, v in overrides.items() if v is not None}
        token = _FLAGS.set(frozenset(given))
        try:
            # every field given: the environment is not consulted again
            return type(self)(**{**dict(self), **given})
        finally:
            _FLAGS.reset(token)


def _describe(exc: ValidationError) -> str:
    """One line for a ValidationError: which variable (or flag), its value, what is allowed."""
    flags = _FLAGS.get()
    lines = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
        else:  # a model validator's "field: reason"
            field, _, message = message.partition(": ")
        info = Settings.model_fields.get(field)
        name = flag_name(field) if field in flags else env_name(field)
        if info is None or not error["loc"]:
            lines.append(f"{name}: {message}" if info is not None else f"{field}: {message}")
            continue
        value = error.get("input")
        shown = MASK if "SecretStr" in repr(info.annotation) else repr(value)
        lines.append(f"{name}={shown}: expected {info.description or message.lower()}")
    return "; ".join(lines)


def from_env(env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
    """Settings from ``env`` (default os.environ); ``flags`` (CLI flags, None = not given) win
    over the environment and are reported under their flag name when bad."""
    given = {k: v for k, v in flags.items() if v is not None}
    env_token, flags_token = _ENVIRON.set(env), _FLAGS.set(frozenset(given))
    try:
        return Settings(**given)
    finally:
        _ENVIRON.reset(env_token)
        _FLAGS.reset(flags_token)
