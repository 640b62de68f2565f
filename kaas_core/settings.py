"""The settings every kaas deployable shares, and the one check that refuses insecure production defaults.

Owned by ``kaas_core``. Each deployable has one typed settings object (``KAAS_`` environment prefix), read
once by its composition root and passed down: ``kaas_api.config.ApiSettings``,
``provider.config.ProviderSettings`` and ``kaas_tunnel.config.TunnelSettings``. They extend the classes
here, so what they share has one definition and one production check:

- ``KaasSettings``: environment, database, logging, the metrics token; ``validate_for_production`` runs
  ``production_problems()``, which each subclass extends with ``super()``;
- ``TunnelSecretSettings``: the secret the API and the tunnel servers share (the k8s proxy's signed
  internal hop derives its key from it), ``KAAS_TUNNEL_INTERNAL_SECRET``;
- ``TunnelRegistrySettings``: the Redis of the tunnel registry (``kaas_core.tunnel_registry``), which the
  tunnel servers write and the API's k8s proxy reads, ``KAAS_REDIS_URL``;
- ``SharedSettings``: what the API and the workers must agree on (broker, secret key, tunnel URL, webhook
  egress).
Defaults serve the embedded mode (``kaas up``); production refuses the insecure ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kaas_core.egress import EgressPolicy, parse_networks

INSECURE_TUNNEL_INTERNAL_SECRET = "embedded-insecure-internal-secret-change-me"  # noqa: S105 (refused in prod)
INSECURE_SECRET_KEY = "embedded-insecure-secret-key-change-me"  # noqa: S105 (refused in prod)
MIN_SECRET_LENGTH = 32


def default_state_dir() -> Path:
    """Where the embedded mode keeps its database and generated secrets."""
    return Path.home() / ".kaas"


def weak_secret(value: str) -> bool:
    """A default or short secret: production refuses it."""
    return "insecure" in value or len(value) < MIN_SECRET_LENGTH


def _random_string(env: str) -> str:
    return f"{env} must be a random string of at least {MIN_SECRET_LENGTH} characters"


def comma_separated(value: str) -> list[str]:
    """The items of a comma-separated setting (``"a, b,,c"`` → ``["a", "b", "c"]``): how list settings are
    written in the environment."""
    return [part.strip() for part in value.split(",") if part.strip()]


class KaasSettings(BaseSettings):
    """What every deployable has: its environment, the database, logging and the metrics token."""

    model_config = SettingsConfigDict(env_prefix="KAAS_", extra="ignore", populate_by_name=True)

    environment: str = Field(default="embedded", description="embedded | production")
    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{default_state_dir() / 'kaas.db'}",
        description="The one database of kaas (PostgreSQL in production; SQLite in the embedded mode).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="The bearer token Prometheus scrapes /metrics with: the API's (where admins' API tokens"
        " work too), the workers' metrics servers and the tunnel servers' internal endpoints.",
    )
    log_json: bool = False  # one JSON object per log line (kaas_core.logs)
    log_level: str = "INFO"

    def production_problems(self) -> list[str]:
        """Why these settings are not fit for production; subclasses add theirs to ``super()``'s."""
        problems = []
        if self.database_url.startswith("sqlite"):
            problems.append("KAAS_DATABASE_URL must point at PostgreSQL")
        if self.metrics_token is not None and weak_secret(self.metrics_token.get_secret_value()):
            problems.append(_random_string("KAAS_METRICS_TOKEN"))
        return problems

    def validate_for_production(self) -> None:
        """Refuse to run a production deployment on the embedded defaults (a no-op elsewhere)."""
        if self.environment != "production":
            return
        problems = self.production_problems()
        if problems:
            raise ValueError("insecure production settings: " + "; ".join(problems))


class TunnelSecretSettings(KaasSettings):
    """The secret the API and the tunnel servers share."""

    tunnel_internal_secret: SecretStr = Field(
        default=SecretStr(INSECURE_TUNNEL_INTERNAL_SECRET),
        # KAAS_INTERNAL_SECRET: the tunnel server's name for it before the two were one setting
        validation_alias=AliasChoices(
            "tunnel_internal_secret", "KAAS_TUNNEL_INTERNAL_SECRET", "KAAS_INTERNAL_SECRET"
        ),
        description="Shared by the API and the tunnel servers: the key of the k8s proxy's signed internal"
        " hop derives from it (kaas_core.internal_hop).",
    )

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if weak_secret(self.tunnel_internal_secret.get_secret_value()):
            problems.append(_random_string("KAAS_TUNNEL_INTERNAL_SECRET"))
        return problems


class TunnelRegistrySettings(KaasSettings):
    """Where the API and the tunnel servers find which tunnel process holds which cluster's agent."""

    redis_url: str | None = Field(
        default=None,
        description="The Redis of the tunnel registry and of the credential revocation feed, shared by"
        " every API and tunnel process; None: in memory, which only the embedded mode (one process) can"
        " use.",
    )
    credential_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long both k8s proxies remember that a token may reach a cluster"
        " (kaas_core.credential_cache), and the API who a token is (kaas_api.auth.principal_cache);"
        " revocations reach every process at once over Redis, the caches are not used while that feed is"
        " down, and 0 switches them off.",
    )

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.redis_url is None:
            problems.append("KAAS_REDIS_URL must be set so API processes can find agent sessions")
        return problems


class SharedSettings(KaasSettings):
    """What the API and the provider workers must agree on: queues, the secret key, the tunnel, egress."""

    broker_url: str = "memory://"
    result_backend: str | None = None
    secret_key: str = Field(
        default=INSECURE_SECRET_KEY,
        description="Derives the key that encrypts secrets at rest (agent tokens, webhook secrets): the API"
        " encrypts, workers decrypt to render user-data and sign deliveries.",
    )
    tunnel_url: str = Field(
        default="ws://127.0.0.1:8010/v1/tunnel", description="Where node agents connect; put into user-data."
    )
    webhook_allowed_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated CIDRs (e.g. '10.20.0.0/16,fd00:1::/64') where webhook receivers may be"
        " besides public addresses: loopback, link-local (cloud metadata) and private addresses are refused"
        " unless listed here (kaas_core.egress).",
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(comma_separated(value))
        parse_networks(value)  # a bad CIDR fails at start-up, naming it
        return value

    @property
    def webhook_egress(self) -> EgressPolicy:
        """Where webhook receivers may be: public addresses plus ``webhook_allowed_networks``."""
        return EgressPolicy.from_strings(self.webhook_allowed_networks)

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.broker_url.startswith("memory"):
            problems.append("KAAS_BROKER_URL must point at Redis")
        if weak_secret(self.secret_key):
            problems.append(_random_string("KAAS_SECRET_KEY"))
        return problems
