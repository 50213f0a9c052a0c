"""Gateway configuration: limits and the verification keys of each tenant and provider.

A TOML file (``--config`` / ``LEO_GATEWAY_CONFIG``)::

    [gateway]
    max_body_bytes = 5000000        # larger requests: 413
    timestamp_tolerance_s = 300     # signed timestamps further from now: 401
    ack_timeout_s = 10              # Kafka must acknowledge within this, else 503
    public_base_url = "https://hooks.example.com"   # the URL providers sign (Twilio)
    allow_certificate_fetch = false # SNS: fetch SigningCertURL (AWS hosts only)

    [tenants."<tenant uuid>".sendgrid]
    public_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE..."

A value written ``"env:NAME"`` is read from the environment variable NAME, so secrets need not
sit in the file. Secrets are held as :class:`Secret`, whose ``repr`` never shows them.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leo_activation.settings import SettingsError

PROVIDERS = ("sendgrid", "twilio", "ses", "mailgun", "postmark", "zalo")


class Secret:
    """A configured value that must not reach logs or error messages."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"


ProviderKeys = Mapping[str, Any]  # field -> Secret, or a list/bool/number as written


@dataclass(frozen=True)
class GatewayConfig:
    max_body_bytes: int = 5_000_000
    timestamp_tolerance_s: float = 300.0
    ack_timeout_s: float = 10.0
    public_base_url: str | None = None
    allow_certificate_fetch: bool = False
    # tenant id (canonical text) -> provider -> keys
    tenants: Mapping[str, Mapping[str, ProviderKeys]] = field(default_factory=dict)

    def keys(self, tenant_id: str, provider: str) -> ProviderKeys | None:
        return self.tenants.get(tenant_id, {}).get(provider)


def _value(raw: Any, where: str, env: Mapping[str, str]) -> Any:
    if isinstance(raw, str):
        if raw.startswith("env:"):
            name = raw[4:]
            if name not in env:
                raise SettingsError(f"{where} names environment variable {name}, which is unset")
            return Secret(env[name])
        return Secret(raw)
    return raw


def load(path: str | Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    if path is None:
        return GatewayConfig()
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"gateway config {path}: {exc}") from None
    general = doc.get("gateway", {})
    known = {"max_body_bytes", "timestamp_tolerance_s", "ack_timeout_s", "public_base_url",
             "allow_certificate_fetch"}  # fmt: skip
    unknown = sorted(set(general) - known)
    if unknown:
        raise SettingsError(f"gateway config {path}: unknown [gateway] keys {', '.join(unknown)}")
    tenants: dict[str, dict[str, dict[str, Any]]] = {}
    for tenant, providers in doc.get("tenants", {}).items():
        try:
            tenant_text = str(uuid.UUID(tenant))
        except ValueError:
            raise SettingsError(f"gateway config {path}: tenant {tenant!r} is not a uuid") from None
        for provider, keys in providers.items():
            if provider not in PROVIDERS:
                raise SettingsError(
                    f"gateway config {path}: unknown provider {provider!r} "
                    f"(one of {', '.join(PROVIDERS)})"
                )
            where = f"tenants.{tenant}.{provider}"
            tenants.setdefault(tenant_text, {})[provider] = {
                name: _value(raw, f"{where}.{name}", env) for name, raw in keys.items()
            }
    return GatewayConfig(
        max_body_bytes=int(general.get("max_body_bytes", 5_000_000)),
        timestamp_tolerance_s=float(general.get("timestamp_tolerance_s", 300)),
        ack_timeout_s=float(general.get("ack_timeout_s", 10)),
        public_base_url=general.get("public_base_url"),
        allow_certificate_fetch=bool(general.get("allow_certificate_fetch", False)),
        tenants=tenants,
    )
