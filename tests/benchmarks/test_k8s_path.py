"""The k8s-path benchmark's anchors still run: ``benchmarks/k8s_path.py``'s routes and measurements, at their
smallest, against the session's shared real control plane (``tests.kube_targets``), so that a change of
remotedialer, nginx or the apiserver that breaks an anchor fails here rather than on the next benchmark run.

The remotedialer anchor is built by ``benchmarks/anchors/build_remotedialer.sh`` when the cache lacks it
(Go modules from the proxy: a minute or two the first time). nginx comes from Debian (``scripts/test.sh``);
without it the nginx test skips, or fails where services are required.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks._k8s_routes import Route, Upstream, nginx_route, remotedialer_route
from benchmarks.k8s_path import SMALL_GET, measure_latency, measure_watch_latency
from tests.conftest import IN_CI
from tests.kube_targets import SharedRealCluster, real_target

pytestmark = pytest.mark.kube_real


@pytest.fixture
def upstream(shared_real_cluster: SharedRealCluster, tmp_path: Path) -> Upstream:
    control_plane = shared_real_cluster.control_plane
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(control_plane.ca_pem)
    apiserver = next(iter(control_plane.apiservers.values()))
    return Upstream(
        url=apiserver.url,
        ca_file=ca_file,
        cert_file=control_plane.work_dir / "pki" / "admin.crt",
        key_file=control_plane.work_dir / "pki" / "admin.key",
    )


@pytest.fixture
def remotedialer(upstream: Upstream, tmp_path: Path) -> Iterator[Route]:
    with remotedialer_route(upstream, tmp_path) as route:
        yield route


@pytest.fixture
def nginx(upstream: Upstream, tmp_path: Path) -> Iterator[Route]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        if IN_CI:
            pytest.fail("nginx is not installed (scripts/test.sh installs nginx-light)")
        pytest.skip("nginx is not installed")
    with nginx_route(upstream, tmp_path) as route:
        yield route


def get_default_namespace(route: Route, *, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    with route.client(timeout=30, headers=headers) as client:
        return client.get(route.prefix + SMALL_GET)


def test_a_get_through_the_remotedialer_tunnel_reaches_the_apiserver(remotedialer: Route) -> None:
    response = get_default_namespace(remotedialer)

    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["name"] == "default"


def test_the_remotedialer_anchor_refuses_a_caller_without_its_token(remotedialer: Route) -> None:
    assert get_default_namespace(remotedialer, token="not-the-anchor-token").status_code == 401


def test_a_get_through_nginx_reaches_the_apiserver_and_a_wrong_token_does_not(nginx: Route) -> None:
    response = get_default_namespace(nginx)

    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["name"] == "default"
    assert get_default_namespace(nginx, token="not-the-anchor-token").status_code == 401


def test_latency_through_the_tunnel_is_measured_in_milliseconds(remotedialer: Route) -> None:
    p50, p99 = measure_latency(remotedialer, count=5, warmup=1)

    assert 0 < p50 <= p99


def test_every_watch_through_the_tunnel_gets_every_write(
    shared_real_cluster: SharedRealCluster, upstream: Upstream, remotedialer: Route
) -> None:
    with real_target(shared_real_cluster) as target:
        result = measure_watch_latency(
            remotedialer, upstream, watchers=3, events=4, namespace=target.namespace
        )

    assert (result.opened, result.missed, result.open_errors) == (3, 0, [])
    assert len(result.samples) == 3 * 4
    assert all(sample > 0 for sample in result.samples)
