"""Settings of the provider deployable (Celery workers and beat).

One typed object, read once from the environment (``KAAS_`` prefix) by the composition root (``kaas_cli``)
and passed down; inner code never reads the environment. Storage, broker and secret defaults are the same
as the API's (``kaas_core.settings.SharedSettings``), so the embedded mode (``kaas up``) works with no
configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from kaas_core.settings import SharedSettings, TunnelSecretSettings, comma_separated, default_state_dir
from provider.addons.catalog import ADDON_NAMES
from provider.bootstrap.agent_manifest import DEFAULT_AGENT_IMAGE


class ProviderSettings(SharedSettings, TunnelSecretSettings):
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
    sweep_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often beat sends the safety-net sweep and each region's leak sweep; a converged"
        " cluster is checked again this long after its last pass.",
    )
    agent_image: str = Field(
        default=DEFAULT_AGENT_IMAGE,
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
        description="The container image of the kaas agent that a new cluster's first control-plane node"
        " runs (an air-gapped region's registry must serve it).",
    )
    manage_addons: bool = Field(
        default=True,
        description="Apply the CNI, cloud controller, CSI, metrics-server and the agent in every cluster"
        " through its tunnel (provider.addons) once its agent is connected; the workers sign that hop with"
        " KAAS_TUNNEL_INTERNAL_SECRET, as the API does.",
    )
    addons_left_out: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Add-ons (by name: cni, cloud-provider, csi, metrics-server, kaas-agent; comma-separated)"
        " that kaas does not apply. kaas up leaves out metrics-server: with no data plane its APIService is"
        " never Available, and an unavailable API group stops the namespace controller from deleting any"
        " namespace.",
    )
    node_unhealthy_seconds: float = Field(
        default=300.0,
        ge=30,
        le=86400,
        description="A worker node NotReady (or missing from its agent's report) this long is replaced"
        " (provider.rollout.health, as Cluster API's MachineHealthCheck).",
    )
    max_unhealthy_percent: int = Field(
        default=40,
        ge=0,
        le=100,
        description="At most this share of a pool (at least one node) is replaced at once; when more of it"
        " is unhealthy nothing is replaced and NodesHealthy says why (the short circuit).",
    )
    drain_timeout_seconds: float = Field(
        default=600.0,
        ge=10,
        le=86400,
        description="How long a drain may take (a PodDisruptionBudget refusing evictions) before the"
        " operation pauses; an upgrade's own strategy overrides it.",
    )
    node_ready_timeout_seconds: float = Field(
        default=600.0,
        ge=10,
        le=86400,
        description="How long a new node of a rollout may take to become Ready before the operation pauses;"
        " an upgrade's own strategy overrides it.",
    )
    autoscale_scale_down_after_seconds: float = Field(
        default=600.0,
        ge=10,
        le=86400,
        description="An autoscaled pool's node with no pod but DaemonSets' this long is removed (drained),"
        " never below the pool's min_count.",
    )
    beat_lease_seconds: float = Field(
        default=10.0,
        ge=2,
        le=60,
        description="How long the leader beat's lease in Redis lasts without a renewal (it renews every"
        " second): another beat replica takes over at most this long after the leader dies.",
    )
    require_agent: bool = Field(
        default=True,
        description="A cluster runs only once its agent is connected and reports every node Ready."
        " Turn it off only to measure the cloud side alone (the control-plane benchmark).",
    )
    # Recovery after a worker dies (docs/architecture.md, "Recovery"): its lease runs out lease_seconds
    # after its last renewal, a stranded message's cluster is overdue requeue_grace_seconds after its pass
    # was wanted, and the region's due-scan finds either within due_scan_interval_seconds.
    lease_seconds: float = Field(
        default=15.0, gt=0, description="How long a pass's hold on its cluster lasts without a renewal."
    )
    lease_renew_seconds: float = Field(
        default=5.0, gt=0, description="How often a running pass renews its lease (its heartbeat)."
    )
    due_scan_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often beat sends each region's due-scan."
    )
    requeue_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How late a reconcile message may start its pass before the due-scan sends another.",
    )
    recovery_bound_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The promise: no cluster waits longer than this for its next pass after a worker died"
        " mid-pass or lost its messages. The settings above must fit in it (checked at start).",
    )
    broker_visibility_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Redis: an unacknowledged message comes back after this long. Recovery does not wait"
        " for it (the due-scan does not); it must exceed the longest countdown and the longest task, or"
        " live workers' messages are delivered twice.",
    )
    # re-queue delay while the cloud is busy (servers building, load balancer pending)
    poll_interval_seconds: float = 2.0
    retry_base_seconds: float = 2.0  # first backoff after a temporary cloud error
    retry_max_seconds: float = 120.0
    # a server in ERROR is replaced this many times, then the operation fails
    server_error_retries: int = 3
    worker_concurrency: int = 4
    # webhook notifications (provider.webhooks): attempts per delivery, per-request timeout, retry backoff
    webhook_max_attempts: int = Field(default=6, ge=1, le=50)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_backoff_base_seconds: float = Field(default=10.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=600.0, gt=0)

    @field_validator("regions", "addons_left_out", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return comma_separated(value) if isinstance(value, str) else value

    @field_validator("addons_left_out")
    @classmethod
    def _known_addons(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ADDON_NAMES))
        if unknown:
            raise ValueError(f"unknown add-on(s) {', '.join(unknown)}; kaas has {', '.join(ADDON_NAMES)}")
        return value

    @model_validator(mode="after")
    def _recovery_fits_its_bound(self) -> ProviderSettings:
        """Refuse timings that cannot keep the recovery promise, naming the numbers."""
        if self.lease_renew_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"KAAS_LEASE_RENEW_SECONDS ({self.lease_renew_seconds:g}) must be at most half of"
                f" KAAS_LEASE_SECONDS ({self.lease_seconds:g}): one late renewal must not lose a live lease"
            )
        worst = max(self.lease_seconds, self.requeue_grace_seconds) + self.due_scan_interval_seconds
        if worst > self.recovery_bound_seconds:
            raise ValueError(
                f"max(KAAS_LEASE_SECONDS, KAAS_REQUEUE_GRACE_SECONDS) + KAAS_DUE_SCAN_INTERVAL_SECONDS ="
                f" {worst:g}s exceeds KAAS_RECOVERY_BOUND_SECONDS ({self.recovery_bound_seconds:g}s)"
            )
        longest_countdown = max(self.retry_max_seconds, self.webhook_backoff_max_seconds)
        if self.broker_visibility_timeout_seconds <= longest_countdown:
            raise ValueError(
                f"KAAS_BROKER_VISIBILITY_TIMEOUT_SECONDS ({self.broker_visibility_timeout_seconds:g}) must"
                f" exceed the longest countdown ({longest_countdown:g}s): Redis would deliver it twice"
            )
        return self

    @property
    def recovery_worst_case_seconds(self) -> float:
        """How long a cluster can wait after a worker died, at most (plus a free worker's pickup)."""
        return max(self.lease_seconds, self.requeue_grace_seconds) + self.due_scan_interval_seconds
