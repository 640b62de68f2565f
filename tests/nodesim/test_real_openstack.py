"""``NodeBooter`` against the REAL OpenStack of ../shared/openstack (fake virt driver, no VM ever boots).

The server is created as the tenant ``os-real-demo``; the booter reads it as admin ``os-real``
(``OS-EXT-SRV-ATTR:user_data`` over real Nova). Other people's kaas servers may exist on that shared
cloud, so the booter is limited to this test's cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodesim.booter import NodeBooter
from tests.nodesim.conftest import (
    KAAS_RBAC_MANIFEST,
    RecordingRunner,
    connect,
    create_kaas_server,
    kaas_user_data,
    new_cluster_id,
    wait_until,
)

pytestmark = pytest.mark.openstack_real

REAL_HINT = (
    "real OpenStack not running: start it with ../shared/openstack/up.sh"
    " (~3 min the first time, see its README)"
)


@pytest.fixture(scope="module")
def real_clouds_yaml() -> Path:
    path = Path(
        os.environ.get("OS_CLIENT_CONFIG_FILE")
        or Path(os.environ.get("KAAS_OPENSTACK_DIR", "/tmp/kaas-openstack")) / "clouds.yaml"
    )
    try:
        up = path.exists() and httpx.get("http://127.0.0.1:5000/v3", timeout=2).status_code == 200
    except httpx.HTTPError:
        up = False
    if not up:
        if os.environ.get("KAAS_REQUIRE_REAL_OPENSTACK") == "1":
            pytest.fail(REAL_HINT)
        pytest.skip(REAL_HINT)
    return path


@pytest.fixture
def real_tenant(real_clouds_yaml: Path) -> Iterator[Any]:
    conn = connect(real_clouds_yaml, "os-real-demo")
    yield conn
    conn.close()


def test_a_server_on_the_real_cloud_gets_its_agent_booted(
    real_clouds_yaml: Path, real_tenant: Any, tmp_path: Path
) -> None:
    cluster_id = new_cluster_id()
    name = f"kaas-nodesim-{cluster_id[:8]}-cp-0"
    runner = RecordingRunner()
    server = create_kaas_server(
        real_tenant,
        cluster_id=cluster_id,
        name=name,
        role="control-plane",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name=name, role="control-plane"),
    )
    try:
        with NodeBooter(
            clouds_yaml=real_clouds_yaml,
            admin_cloud="os-real",
            rbac_manifest=KAAS_RBAC_MANIFEST,
            state_dir=tmp_path / "nodesim",
            poll_interval=0.5,
            kubernetes_version_default="v1.30.2",
            agent_runner=runner,
            cluster_filter=lambda cid: cid == cluster_id,
        ) as booter:
            info = wait_until(
                lambda: (c := booter.clusters().get(cluster_id)) and c.nodes_ready == 1 and c,
                timeout=90,
                what="the real server's agent to boot",
            )
            assert info.agent_running
            assert [config.cluster_id for config in runner.started] == [cluster_id]
            assert runner.started[0].node_name == name
            handle = booter.standin_for(cluster_id)
            assert handle is not None
            assert handle.standin.version == "v1.29.4"

            real_tenant.compute.delete_server(server)
            real_tenant.compute.wait_for_delete(server, wait=60, interval=1)
            wait_until(lambda: cluster_id not in booter.clusters(), timeout=30, what="the cluster to stop")
            assert runner.stopped == [cluster_id]
    finally:
        real_tenant.compute.delete_server(server, ignore_missing=True)
        real_tenant.compute.wait_for_delete(server, wait=60, interval=1)
    left = [s for s in real_tenant.compute.servers() if f"kaas-cluster={cluster_id}" in (s.tags or [])]
    assert left == []
