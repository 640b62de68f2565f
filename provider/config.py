"""Settings of the provider deployable (Celery workers and beat).

One typed object, read once from the environment (``KAAS_`` prefix) by the composition root (``kaas_cli``)
and passed down; inner code never reads the environment. Storage, broker and secret defaults are the same
as the API's (``kaas_core.settings.SharedSettings``), so the embedded mode (``kaas up``) works with no
configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from kaas_core.settings import SharedSettings, default_state_dir


class ProviderSettings(SharedSettings):
    """Everything a provider worker needs: where the rows are, where the work comes from, which clouds."""

    clouds_yaml: Path = Field(
        default_factory=lambda: default_state_dir() / "simcloud" / "clouds.yaml",
        description="The clouds.yaml whose entries regions.cloud names.",
    )
    regions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Region names this worker serves (comma separated); each is queue region.<name>. "
        "Empty: the worker serves every region it is started for by the caller.",
    )
    sweep_interval_seconds: float = 30.0
    require_agent: bool = Field(
        default=True,
        description="A cluster runs only once its agent is connected and reports every node Ready."
        " Turn it off only to measure the cloud side alone (the control-plane benchmark).",
    )
    lease_seconds: float = 120.0
    # re-queue delay while the cloud is busy (servers building, load balancer pending)
    poll_interval_seconds: float = 2.0
    retry_base_seconds: float = 2.0  # first backoff after a temporary cloud error
    retry_max_seconds: float = 120.0
    # a server in ERROR is replaced this many times, then the operation fails
    server_error_retries: int = 3
    # the sweep re-queues a converging cluster untouched this long (its re-queue chain was lost)
    sweep_stale_after_seconds: float = 180.0
    worker_concurrency: int = 4
    # webhook notifications (provider.webhooks): attempts per delivery, per-request timeout, retry backoff
    webhook_max_attempts: int = Field(default=6, ge=1, le=50)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_backoff_base_seconds: float = Field(default=10.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=600.0, gt=0)

    @field_validator("regions", mode="before")
    @classmethod
    def _split_regions(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
