"""What one provider process needs to reconcile: the session factory, drivers per cloud, secrets, limits.

Built once per process by the composition root (``provider.celery_app.make_celery`` builds it from
``ProviderSettings`` unless one is given) and passed to every pass; tests build their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import utcnow
from kaas_core.egress import EgressPolicy
from kaas_core.security import SecretBox
from provider.addons.catalog import ADDONS, Addon
from provider.addons.reconcile import ApplierFactory
from provider.bootstrap.agent_manifest import DEFAULT_AGENT_IMAGE
from provider.cloud.driver import CloudDriver
from provider.config import ProviderSettings
from provider.metrics import ReconcileMetrics
from provider.rollout.health import HealthPolicy
from provider.rollout.plan import RolloutPolicy
from provider.rollout.run import NodeOpsFactory


@dataclass(frozen=True)
class ReconcileLimits:
    """Timings and bounds of a pass and of recovery, from ``ProviderSettings`` (which documents them)."""

    lease_seconds: float = 15.0
    lease_renew_seconds: float = 5.0
    poll_interval_seconds: float = 2.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 120.0
    server_error_retries: int = 3
    requeue_grace_seconds: float = 10.0
    resync_interval_seconds: float = 30.0  # a converged cluster is due again this long after its pass
    due_scan_batch: int = 500  # clusters one due-scan of one region queues at most

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> ReconcileLimits:
        return cls(
            lease_seconds=settings.lease_seconds,
            lease_renew_seconds=settings.lease_renew_seconds,
            poll_interval_seconds=settings.poll_interval_seconds,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            server_error_retries=settings.server_error_retries,
            requeue_grace_seconds=settings.requeue_grace_seconds,
            resync_interval_seconds=settings.sweep_interval_seconds,
        )


@dataclass(frozen=True)
class WebhookLimits:
    """Bounds of webhook deliveries (``provider.webhooks.delivery``), from ``ProviderSettings``."""

    max_attempts: int = 6
    timeout_seconds: float = 5.0
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 600.0
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # where receivers may be (kaas_core.egress)

    @property
    def claim_seconds(self) -> float:
        """How long an attempt in flight keeps others (and the sweep) away: longer than any request."""
        return 6 * self.timeout_seconds + 30.0

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> WebhookLimits:
        return cls(
            max_attempts=settings.webhook_max_attempts,
            timeout_seconds=settings.webhook_timeout_seconds,
            backoff_base_seconds=settings.webhook_backoff_base_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            egress=settings.webhook_egress,
        )


@dataclass
class ProviderContext:
    """Process-wide dependencies of the reconciler. ``driver_factory(cloud_name)`` is cached per cloud."""

    session_factory: sessionmaker[Session]
    driver_factory: Callable[[str], CloudDriver]
    secret_box: SecretBox
    tunnel_url: str
    agent_image: str = DEFAULT_AGENT_IMAGE  # what the first control-plane node runs (ProviderSettings)
    # how add-ons reach a cluster (provider.addons); None: kaas applies none (ProviderSettings.manage_addons)
    addons: ApplierFactory | None = None
    # how the rollout reaches a cluster to cordon, drain and remove nodes (provider.rollout); None: it cannot,
    # and removed nodes are deleted without a drain (kaas up's stand-ins, the cloud-side tests)
    node_ops: NodeOpsFactory | None = None
    # the upgrade strategy an operation does not set, and the drain policy of scale-downs
    rollout_defaults: RolloutPolicy = field(default_factory=RolloutPolicy)
    # when a NotReady worker is replaced, and how much of a pool at most (provider.rollout.health)
    health_policy: HealthPolicy = field(default_factory=HealthPolicy)
    # an autoscaled pool's node empty this long is removed (settings: autoscale_scale_down_after_seconds)
    autoscale_scale_down_after: timedelta = timedelta(seconds=600)
    # which add-ons, in order (the catalog less ProviderSettings.addons_left_out)
    addon_catalog: tuple[Addon, ...] = ADDONS
    limits: ReconcileLimits = field(default_factory=ReconcileLimits)
    webhooks: WebhookLimits = field(default_factory=WebhookLimits)
    # a cluster runs only once its agent is connected and reports every node Ready (see agent_gate)
    require_agent: bool = True
    # called with the step's name after every finished step: an observation point for tests and metrics
    after_step: Callable[[str], None] | None = None
    # passes and steps are counted and timed here (own registry unless the composition root shares one)
    metrics: ReconcileMetrics = field(default_factory=ReconcileMetrics)
    # what leases, due times and passes read as now: tests drive it to make a lease run out at once
    clock: Callable[[], datetime] = utcnow
    _drivers: dict[str, CloudDriver] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def driver(self, cloud_name: str) -> CloudDriver:
        with self._lock:
            driver = self._drivers.get(cloud_name)
            if driver is None:
                driver = self.driver_factory(cloud_name)
                self._drivers[cloud_name] = driver
            return driver
