"""Reconcile metrics: every pass and every step run is counted and timed by how it ended, and the worker
serves them over HTTP. Passes run against simcloud through the real OpenStack driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_api.users.service import create_user
from kaas_core.db.models import ClusterPhase, OperationKind
from kaas_tunnel.metrics import TunnelMetrics
from provider.celery_app import make_celery
from provider.config import ProviderSettings
from provider.metrics import ReconcileMetrics, start_metrics_server
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.kaas_api.conftest import RecordingDispatcher
from tests.provider.factories import PoolSpec, create_cluster, request_operation
from tests.provider.harness import make_context, run_until_settled


@pytest.fixture
def simcloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "simcloud", boot_delay=0.0) as handle:
        yield handle


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], simcloud: SimCloudHandle) -> ProviderContext:
    return make_context(session_factory, simcloud.clouds_yaml)


def sample(ctx: ProviderContext, name: str, **labels: str) -> float:
    return ctx.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_reconcile_to_running_counts_each_pass_and_each_step_by_outcome(ctx: ProviderContext) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    results = run_until_settled(ctx, created.id)
    assert results[-1].outcome == "converged"

    assert sample(ctx, "kaas_reconcile_passes_total", outcome="converged") == 1
    progressing = sum(1 for r in results if r.outcome == "progressing")
    assert sample(ctx, "kaas_reconcile_passes_total", outcome="progressing") == progressing
    assert sample(ctx, "kaas_reconcile_pass_duration_seconds_count", outcome="converged") == 1
    assert sample(ctx, "kaas_reconcile_pass_duration_seconds_sum", outcome="converged") > 0
    # every pass runs network first, and every pass finds it done
    assert sample(ctx, "kaas_reconcile_step_runs_total", step="network", outcome="converged") == len(results)
    assert sample(ctx, "kaas_reconcile_step_runs_total", step="wait_active", outcome="converged") >= 1
    assert sample(
        ctx, "kaas_reconcile_step_duration_seconds_count", step="network", outcome="converged"
    ) == len(results)


def test_a_temporary_cloud_error_counts_as_temporary_error(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    simcloud.sim.fail_next_server_creates(1000)
    results = [reconcile_cluster_once(ctx, created.id, worker_id="w") for _ in range(2)]
    assert {r.outcome for r in results} == {"retrying"}
    assert sample(ctx, "kaas_reconcile_passes_total", outcome="retrying") == 2
    assert sample(ctx, "kaas_reconcile_step_runs_total", step="control_plane", outcome="temporary_error") == 2


def test_a_permanent_cloud_error_counts_as_permanent_error(ctx: ProviderContext) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(flavor="m1.gigantic"),))
    assert run_until_settled(ctx, created.id)[-1].outcome == "failed"
    assert sample(ctx, "kaas_reconcile_passes_total", outcome="failed") == 1
    failed = [
        s.labels["step"]
        for family in ctx.metrics.registry.collect()
        if family.name == "kaas_reconcile_step_runs"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "permanent_error"
    ]
    assert failed == ["control_plane"]  # it checks every flavor of the cluster before creating servers
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "skipped"
    assert sample(ctx, "kaas_reconcile_passes_total", outcome="skipped") == 1


def test_a_deletion_counts_its_delete_step(ctx: ProviderContext) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    run_until_settled(ctx, created.id)
    request_operation(ctx.session_factory, created.id, kind=OperationKind.DELETE, phase=ClusterPhase.DELETING)
    assert run_until_settled(ctx, created.id)[-1].outcome == "deleted"
    assert sample(ctx, "kaas_reconcile_step_runs_total", step="delete_resources", outcome="converged") == 1
    assert sample(ctx, "kaas_reconcile_passes_total", outcome="deleted") == 1


def test_the_metrics_server_serves_the_registry_over_http() -> None:
    metrics = ReconcileMetrics()
    metrics.observe_pass(outcome="converged", seconds=0.5)
    server = start_metrics_server(metrics.registry, host="127.0.0.1", port=0, token="scrape-token-0123456789")
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        anonymous = httpx.get(url, timeout=5, trust_env=False)
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5, trust_env=False)
        response = httpx.get(
            url, headers={"Authorization": "Bearer scrape-token-0123456789"}, timeout=5, trust_env=False
        )
    finally:
        server.stop()
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert "kaas_reconcile" not in anonymous.text
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("kaas_reconcile_passes_total", (("outcome", "converged"),))] == 1


def test_a_worker_app_built_from_settings_records_into_the_metrics_it_is_given() -> None:
    shared = ReconcileMetrics(CollectorRegistry())
    app = make_celery(ProviderSettings(broker_url="memory://"), metrics=shared)
    try:
        assert app.provider_metrics is shared
    finally:
        app.close()


def test_a_given_context_brings_its_own_metrics(ctx: ProviderContext) -> None:
    app = make_celery(ProviderSettings(broker_url="memory://"), context=ctx)
    try:
        assert app.provider_metrics is ctx.metrics
    finally:
        app.close()
    with pytest.raises(ValueError, match="metrics"):
        make_celery(ProviderSettings(broker_url="memory://"), context=ctx, metrics=ReconcileMetrics())


def test_in_one_process_the_apis_metrics_show_the_provider_and_the_tunnel_too(
    session_factory: sessionmaker[Session],
) -> None:
    """What ``kaas up`` does: one registry for the API, the reconciler and the tunnel server."""
    registry = CollectorRegistry()
    reconcile = ReconcileMetrics(registry)
    tunnel = TunnelMetrics(registry)
    app = create_app(
        ApiSettings(database_url="postgresql://unused"),
        session_factory=session_factory,
        dispatcher=RecordingDispatcher(),
        metrics_registry=registry,
    )
    with session_factory() as session:
        _admin, token = create_user(session, name="admin", is_admin=True)
        session.commit()
    reconcile.observe_pass(outcome="converged", seconds=0.1)
    tunnel.streams_opened.inc()
    with TestClient(app) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "kaas_http_requests",
        "kaas_clusters",
        "kaas_reconcile_passes",
        "kaas_tunnel_streams_opened",
    } <= families
