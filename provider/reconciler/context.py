"""What one provider process needs to reconcile: the session factory, drivers per cloud, secrets, limits.

Built once per process by the composition root (``provider.celery_app.make_celery`` builds it from
``ProviderSettings`` unless one is given) and passed to every pass; tests build their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from kaas_api.security import SecretBox
from provider.cloud.driver import CloudDriver
from provider.config import ProviderSettings


@dataclass(frozen=True)
class ReconcileLimits:
    """Timings and bounds of a pass, from ``ProviderSettings``."""

    lease_seconds: float = 120.0
    poll_interval_seconds: float = 2.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 120.0
    server_error_retries: int = 3
    stale_after_seconds: float = 180.0  # the sweep re-queues a converging cluster untouched this long

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> ReconcileLimits:
        return cls(
            lease_seconds=settings.lease_seconds,
            poll_interval_seconds=settings.poll_interval_seconds,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            server_error_retries=settings.server_error_retries,
            stale_after_seconds=settings.sweep_stale_after_seconds,
        )


@dataclass
class ProviderContext:
    """Process-wide dependencies of the reconciler. ``driver_factory(cloud_name)`` is cached per cloud."""

    session_factory: sessionmaker[Session]
    driver_factory: Callable[[str], CloudDriver]
    secret_box: SecretBox
    tunnel_url: str
    limits: ReconcileLimits = field(default_factory=ReconcileLimits)
    # a cluster runs only once its agent is connected and reports every node Ready (see agent_gate)
    require_agent: bool = True
    # called with the step's name after every finished step: an observation point for tests and metrics
    after_step: Callable[[str], None] | None = None
    _drivers: dict[str, CloudDriver] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def driver(self, cloud_name: str) -> CloudDriver:
        with self._lock:
            driver = self._drivers.get(cloud_name)
            if driver is None:
                driver = self.driver_factory(cloud_name)
                self._drivers[cloud_name] = driver
            return driver
