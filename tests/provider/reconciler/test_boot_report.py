"""A node whose boot failed says so on its console, and the reconciler stops waiting for it.

The cloud side converges first (real OpenStackDriver on simcloud, the agent required); then a server's
console gets the line its boot writes (``agents.tunnel.boot_report``; nodesim writes it through simcloud's
``/_sim/servers/{id}/console`` as it plays the boot), which the driver reads back through Nova's
``os-getConsoleOutput``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from agents.tunnel.boot_report import failure_line, success_line
from kaas_core.db.models import ClusterPhase, NodeRole, OperationState
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.nodesim.conftest import connect
from tests.provider.factories import PoolSpec, create_cluster
from tests.provider.reconciler.test_agent_gate import converge_cloud_side, report
from tests.provider.reconciler.test_reconcile import load

STEP = "kubeadm join discovery"
REASON = "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys 'sha256:ab' pinned"


@pytest.fixture
def gated(ctx: ProviderContext) -> ProviderContext:
    return replace(ctx, require_agent=True)


def write_console(simcloud: SimCloudHandle, server_id: str, lines: list[str]) -> None:
    """What the server's boot prints, as nodesim writes it."""
    conn = connect(simcloud.clouds_yaml, simcloud.admin_cloud_name)
    try:
        response = conn.session.post(f"{simcloud.base_url}/_sim/servers/{server_id}/console",
                                     json={"lines": lines}, raise_exc=False)
    finally:
        conn.close()
    assert response.status_code == 204, response.text


def conditions_by_type(cluster: object) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in cluster.conditions}  # type: ignore[attr-defined]


def test_a_worker_whose_boot_failed_fails_the_operation_with_its_node_step_and_reason(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=2),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    workers = [n for n in nodes if n.role == NodeRole.WORKER.value]
    failed, joined = workers[0], workers[1]
    assert failed.server_id is not None
    assert joined.server_id is not None
    started = "cloud-init: running kubeadm join"
    write_console(simcloud, joined.server_id, [started, success_line()])
    write_console(simcloud, failed.server_id, [started, failure_line(STEP, REASON)])
    report(gated.session_factory, created.id, connected=True,
           ready={n.name: n.id != failed.id for n in nodes})

    result = reconcile_cluster_once(gated, created.id, worker_id="w")

    assert result.outcome == "failed"
    cluster, operation, _nodes = load(gated.session_factory, created.id)
    assert cluster.phase == ClusterPhase.ERROR.value
    assert operation.state == OperationState.FAILED.value
    assert operation.step == "bootstrap"
    assert operation.error == f"bootstrap: node {failed.name}: {STEP} failed: {REASON}"
    nodes_ready = conditions_by_type(cluster)["NodesReady"]
    assert (nodes_ready["status"], nodes_ready["reason"]) == ("False", "NodeBootstrapFailed")
    assert nodes_ready["message"] == f"node {failed.name}: {STEP} failed: {REASON}"


def test_a_control_plane_whose_kubeadm_init_failed_shows_on_control_plane_ready(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    """Its agent never connects: without the console the cluster would wait for it forever."""
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    control_plane = next(n for n in nodes if n.role == NodeRole.CONTROL_PLANE.value)
    assert control_plane.server_id is not None
    reason = "[certs] error: the apiserver certificate's SANs miss 10.0.0.5"
    write_console(simcloud, control_plane.server_id, [failure_line("kubeadm init phase certs", reason)])

    assert reconcile_cluster_once(gated, created.id, worker_id="w").outcome == "failed"
    cluster, operation, _nodes = load(gated.session_factory, created.id)
    ready = conditions_by_type(cluster)["ControlPlaneReady"]
    assert (ready["status"], ready["reason"]) == ("False", "NodeBootstrapFailed")
    assert f"node {control_plane.name}: kubeadm init phase certs failed: " in str(ready["message"])
    assert operation.error is not None
    assert reason in operation.error


def test_consoles_that_report_no_failure_keep_the_cluster_waiting_for_its_agent(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    """A boot still running, one that joined, a failure it recovered from (the last line counts), and a
    cloud's own console noise: nothing to fail for."""
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=2),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    consoles = ([], [success_line()], [failure_line(STEP, REASON), success_line()])
    for node, lines in zip(nodes, consoles, strict=True):
        assert node.server_id is not None
        write_console(simcloud, node.server_id, ["[    0.000000] Linux version 6.1", *lines])

    result = reconcile_cluster_once(gated, created.id, worker_id="w")

    assert result.outcome != "failed"
    cluster, operation, _nodes = load(gated.session_factory, created.id)
    assert cluster.phase == ClusterPhase.PROVISIONING.value
    assert (operation.state, operation.step) == (OperationState.RUNNING.value, "agent")
