"""Settings of the tunnel server deployable (``KAAS_`` prefix), read once by its composition root.

Owned by ``provider.tunnel``; ``TunnelSettings()`` is built by whoever starts the server (``kaas tunnel``,
the embedded mode, tests) and passed to ``TunnelServer``. Inner code never reads the environment.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from kaas_api.config import default_state_dir
from kaas_api.serving.settings import HttpInputSettings


class TunnelSettings(HttpInputSettings):
    """Where the tunnel server listens, how it finds its peers, and its limits and timeouts (its internal
    endpoint's ``KAAS_HTTP_*`` input limits and body cap are the API's, from ``HttpInputSettings``)."""

    model_config = SettingsConfigDict(env_prefix="KAAS_", extra="ignore")

    environment: str = Field(default="embedded", description="embedded | production")
    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{default_state_dir() / 'kaas.db'}",
        description="the API's database (agent tokens, cluster_agents); the same default as the API's",
    )
    redis_url: str | None = Field(default=None, description="the shared registry; None = in-memory")

    tunnel_host: str = "127.0.0.1"
    tunnel_port: int = Field(default=8010, ge=0, le=65535, description="0 picks a free port")
    tunnel_path: str = "/v1/tunnel"
    internal_host: str = "127.0.0.1"
    internal_port: int = Field(default=8011, ge=0, le=65535, description="0 picks a free port")
    internal_advertise_url: str | None = Field(
        default=None, description="how other processes reach the internal endpoint; http://host:port if unset"
    )
    internal_secret: SecretStr = Field(
        default=SecretStr("embedded-insecure-internal-secret-change-me"),
        description="Shared with the API: the key of the k8s proxy's signed assertions derives from it.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="The bearer token of GET /metrics on the internal endpoint; unset: no metrics served.",
    )

    registry_ttl_seconds: float = Field(default=30.0, gt=0)
    handshake_timeout_seconds: float = Field(default=10.0, gt=0)
    dial_timeout_seconds: float = Field(default=10.0, gt=0)
    response_head_timeout_seconds: float = Field(default=60.0, gt=0)
    max_streams_per_session: int = Field(default=1024, ge=1)
    stream_window_bytes: int = Field(default=256 * 1024, ge=1024)
    agent_replacements_per_window: int = Field(
        default=5,
        ge=1,
        description="How many newer agent sessions may replace a live one, per cluster and window; a dial"
        " beyond that answers 429 and the live session stays (provider.tunnel.store.admit_session).",
    )
    agent_replacement_window_seconds: float = Field(default=60.0, gt=0)
    log_json: bool = False  # one JSON object per log line (kaas_api.observability.logs)
    log_level: str = "INFO"

    def validate_for_production(self) -> None:
        if self.environment != "production":
            return
        secret = self.internal_secret.get_secret_value()
        problems = []
        if "insecure" in secret or len(secret) < 32:
            problems.append("KAAS_INTERNAL_SECRET must be a random string of at least 32 characters")
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 32:
            problems.append("KAAS_METRICS_TOKEN must be a random string of at least 32 characters")
        if self.redis_url is None:
            problems.append("KAAS_REDIS_URL must be set so API processes can find agent sessions")
        if problems:
            raise ValueError("insecure production settings: " + "; ".join(problems))
