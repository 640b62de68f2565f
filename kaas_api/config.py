"""Settings of the API deployable.

One typed object, read once from the environment (``KAAS_`` prefix) by the composition root and passed down.
Inner code never reads the environment. Defaults serve the embedded mode (SQLite, in-memory broker);
``validate_for_production`` refuses the insecure ones.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_state_dir() -> Path:
    """Where the embedded mode keeps its database and generated secrets."""
    return Path.home() / ".kaas"


class ApiSettings(BaseSettings):
    """Everything the API process and the workers share about storage, queues and secrets."""

    model_config = SettingsConfigDict(env_prefix="KAAS_", extra="ignore")

    environment: str = Field(default="embedded", description="embedded | production")
    database_url: str = Field(default_factory=lambda: f"sqlite:///{default_state_dir() / 'kaas.db'}")
    broker_url: str = "memory://"
    result_backend: str | None = None
    secret_key: str = Field(
        default="embedded-insecure-secret-key-change-me",
        description="Derives the key that encrypts cluster agent tokens at rest.",
    )
    public_url: str = "http://127.0.0.1:8000"
    tunnel_url: str = "ws://127.0.0.1:8010/v1/tunnel"
    token_default_ttl_days: int = 90
    kubeconfig_token_ttl_days: int = 30
    log_json: bool = False

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
        if problems:
            raise ValueError("insecure production settings: " + "; ".join(problems))
