"""Test helpers for the provider: a ProviderContext on the real OpenStackDriver against simcloud, and a loop
that runs reconcile passes the way the Celery task chain would (without the broker)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from kaas_core.security import SecretBox
from provider.cloud.registry import DriverRegistry
from provider.reconciler.context import ProviderContext, ReconcileLimits
from provider.reconciler.reconcile import PassResult, reconcile_cluster_once
from tests.provider.factories import TEST_SECRET_KEY

TUNNEL_URL = "wss://kaas.test/v1/tunnel"
FAST_LIMITS = ReconcileLimits(
    lease_seconds=30.0,
    poll_interval_seconds=0.05,
    retry_base_seconds=0.05,
    retry_max_seconds=0.2,
    server_error_retries=2,
)


def make_context(
    session_factory: sessionmaker[Session],
    clouds_yaml: Path,
    *,
    limits: ReconcileLimits = FAST_LIMITS,
    require_agent: bool = False,
) -> ProviderContext:
    """The cloud-side tests run without agents (``require_agent=False``); tests/provider/reconciler/
    test_agent_gate.py runs with it."""
    registry = DriverRegistry(clouds_yaml)
    return ProviderContext(
        session_factory=session_factory,
        driver_factory=registry.get,
        secret_box=SecretBox(TEST_SECRET_KEY),
        tunnel_url=TUNNEL_URL,
        limits=limits,
        require_agent=require_agent,
    )


def run_until_settled(
    ctx: ProviderContext, cluster_id: str, *, max_passes: int = 200, worker_id: str = "test-worker"
) -> list[PassResult]:
    """Run passes, honouring each requeue delay, until one asks for no further pass."""
    results = []
    for _ in range(max_passes):
        result = reconcile_cluster_once(ctx, cluster_id, worker_id=worker_id)
        results.append(result)
        if result.requeue_after is None:
            return results
        time.sleep(min(result.requeue_after, 0.2))
    raise AssertionError(f"cluster {cluster_id} did not settle in {max_passes} passes: {results[-3:]}")


def cloud_inventory(sim: Any) -> dict[str, int]:
    """Resources per kind in the simulated cloud (seeded ones left out); empty kinds dropped."""
    return {kind: len(records) for kind, records in sim.inventory().items() if records}


def server_names(sim: Any) -> list[str]:
    return sorted(s["name"] for s in sim.inventory()["servers"])


def kinds(sim: Any) -> Counter[str]:
    return Counter(cloud_inventory(sim))
