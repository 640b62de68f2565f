"""Settings of the API deployable.

One typed object, read once from the environment (``KAAS_`` prefix) by the composition root and passed down.
Inner code never reads the environment. Defaults serve the embedded mode (SQLite, in-memory broker);
``validate_for_production`` refuses the insecure ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kaas_api.projects.policy import CreationPolicy, ProjectCreation
from kaas_api.serving.settings import MIB, HttpInputSettings
from kaas_api.webhooks.egress import EgressPolicy, parse_networks

# the same default as the tunnel server (provider.tunnel.config), so the embedded pieces match out of the box
INSECURE_TUNNEL_INTERNAL_SECRET = "embedded-insecure-internal-secret-change-me"  # noqa: S105 (refused in prod)


def default_state_dir() -> Path:
    """Where the embedded mode keeps its database and generated secrets."""
    return Path.home() / ".kaas"


class SharedSettings(BaseSettings):
    """What the API and the provider workers must agree on: storage, queues, the secret key, the tunnel.

    ``ApiSettings`` and ``provider.config.ProviderSettings`` both extend it, so their defaults cannot drift.
    """

    model_config = SettingsConfigDict(env_prefix="KAAS_", extra="ignore")

    environment: str = Field(default="embedded", description="embedded | production")
    database_url: str = Field(default_factory=lambda: f"sqlite:///{default_state_dir() / 'kaas.db'}")
    broker_url: str = "memory://"
    result_backend: str | None = None
    secret_key: str = Field(
        default="embedded-insecure-secret-key-change-me",
        description="Derives the key that encrypts cluster agent tokens at rest (the API encrypts, workers"
        " decrypt to render user-data).",
    )
    tunnel_url: str = Field(
        default="ws://127.0.0.1:8010/v1/tunnel", description="Where node agents connect; put into user-data."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="The bearer token Prometheus scrapes /metrics with: the API's (where admins' API tokens"
        " work too) and the workers' metrics servers, which need it.",
    )
    webhook_allowed_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated CIDRs (e.g. '10.20.0.0/16,fd00:1::/64') where webhook receivers may be"
        " besides public addresses: loopback, link-local (cloud metadata) and private addresses are refused"
        " unless listed here (kaas_api.webhooks.egress).",
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        parse_networks(value)  # a bad CIDR fails at start-up, naming it
        return value

    @property
    def webhook_egress(self) -> EgressPolicy:
        """Where webhook receivers may be: public addresses plus ``webhook_allowed_networks``."""
        return EgressPolicy.from_strings(self.webhook_allowed_networks)


class ApiSettings(SharedSettings, HttpInputSettings):
    """The API process's settings (the ``KAAS_HTTP_*`` input limits it shares with the tunnel server come
    from ``HttpInputSettings``)."""

    public_url: str = "http://127.0.0.1:8000"
    token_default_ttl_days: int = 90
    kubeconfig_token_ttl_days: int = 30
    kubeconfig_token_max_ttl_days: int = 365
    tunnel_internal_secret: SecretStr = Field(
        default=SecretStr(INSECURE_TUNNEL_INTERNAL_SECRET),
        description="Shared with the tunnel servers: the k8s proxy bearer token on their internal endpoint.",
    )
    k8s_proxy_connect_timeout_seconds: float = 5.0
    k8s_proxy_read_timeout_seconds: float = 120.0  # per read; watches and follows have none
    tls_cert_file: Path | None = Field(
        default=None, description="Serve the API over HTTPS with this certificate (kubectl needs HTTPS)."
    )
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(
        default=None, description="The CA of tls_cert_file; embedded in downloaded kubeconfigs when set."
    )
    log_json: bool = False
    dashboard_session_hours: int = Field(
        default=12, ge=1, le=24 * 30, description="How long an admin dashboard login lasts."
    )
    log_level: str = "INFO"
    project_creation: ProjectCreation = Field(
        default=ProjectCreation.LIMITED,
        description="Who may create projects: anyone | admins | limited (each user up to"
        " max_projects_per_user live projects they created). Global admins always may.",
    )
    max_projects_per_user: int = Field(
        default=3,
        ge=0,
        le=10_000,
        description="With project_creation=limited: how many of the projects a non-admin created may"
        " exist at once (deleting one frees its place).",
    )

    @property
    def project_creation_policy(self) -> CreationPolicy:
        return CreationPolicy(who=self.project_creation, max_per_user=self.max_projects_per_user)
    http_max_body_bytes: int = Field(
        default=1 * MIB,
        ge=0,
        description="Request bodies of every route but the k8s proxy (JSON, forms); larger ones get 413.",
    )
    http_max_json_values: int = Field(
        default=10_000,
        ge=1,
        description="Values (object members plus array items) a JSON body may hold; more is refused with 422"
        " before validation, which would report each unknown key.",
    )
    max_validation_errors: int = Field(
        default=20, ge=1, description="How many problems a 422 lists; the message says how many more."
    )

    def validate_for_production(self) -> None:
        """Refuse to run a production deployment on the embedded defaults."""
        if self.environment != "production":
            return
        problems = []
        if self.database_url.startswith("sqlite"):
            problems.append("KAAS_DATABASE_URL must point at PostgreSQL")
        if self.broker_url.startswith("memory"):
            problems.append("KAAS_BROKER_URL must point at Redis")
        if "insecure" in self.secret_key or len(self.secret_key) < 32:
            problems.append("KAAS_SECRET_KEY must be a random string of at least 32 characters")
        internal_secret = self.tunnel_internal_secret.get_secret_value()
        if internal_secret == INSECURE_TUNNEL_INTERNAL_SECRET or len(internal_secret) < 32:
            problems.append("KAAS_TUNNEL_INTERNAL_SECRET must be a random string of at least 32 characters")
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 32:
            problems.append("KAAS_METRICS_TOKEN must be a random string of at least 32 characters")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("KAAS_TLS_CERT_FILE and KAAS_TLS_KEY_FILE go together")
        if problems:
            raise ValueError("insecure production settings: " + "; ".join(problems))
