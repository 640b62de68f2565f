"""A cluster runs only when its agent is connected and reports every node Ready.

The cloud side converges first (real OpenStackDriver on simcloud); then what the tunnel server wrote into
``cluster_agents`` decides the phase, the AgentConnected and NodesReady conditions and the nodes' ready
flags.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import ClusterAgent, ClusterPhase, OperationState, utcnow
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.provider.factories import PoolSpec, create_cluster
from tests.provider.reconciler.test_reconcile import conditions, load


@pytest.fixture
def gated(ctx: ProviderContext) -> ProviderContext:
    return replace(ctx, require_agent=True)


def converge_cloud_side(ctx: ProviderContext, cluster_id: str, *, passes: int = 30) -> str:
    """Run passes until the only thing missing is the agent; return the last outcome message."""
    message = ""
    for _ in range(passes):
        result = reconcile_cluster_once(ctx, cluster_id, worker_id="w")
        message = result.message
        cluster, operation, _nodes = load(ctx.session_factory, cluster_id)
        if operation.step == "agent" or cluster.phase == ClusterPhase.RUNNING.value:
            return message
    raise AssertionError(f"the cloud side did not converge: {message}")


def report(
    session_factory: sessionmaker[Session], cluster_id: str, *, connected: bool, ready: dict[str, bool]
) -> None:
    """What the tunnel server writes when the agent reports (or goes away)."""
    now = utcnow()
    with session_factory.begin() as session:
        agent = session.get(ClusterAgent, cluster_id) or ClusterAgent(cluster_id=cluster_id)
        agent.connected = connected
        agent.connected_at = agent.connected_at or now
        agent.disconnected_at = None if connected else now
        agent.last_seen_at = now
        agent.kubernetes_version = "v1.30.2"
        agent.nodes = [{"name": name, "ready": is_ready} for name, is_ready in ready.items()]
        agent.nodes_total = len(ready)
        agent.nodes_ready = sum(ready.values())
        session.add(agent)


def test_without_an_agent_the_cluster_waits_and_says_why(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=2),))
    message = converge_cloud_side(gated, created.id)
    cluster, operation, nodes = load(gated.session_factory, created.id)
    assert cluster.phase == ClusterPhase.PROVISIONING.value
    assert conditions(cluster)["AgentConnected"] == "False"
    assert "has not connected yet" in message
    assert operation.state == OperationState.RUNNING.value
    assert (operation.step, operation.progress) == ("agent", 95)
    assert not any(node.ready for node in nodes)


def test_a_connected_agent_with_every_node_ready_makes_it_running(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=2),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    report(gated.session_factory, created.id, connected=True, ready={n.name: True for n in nodes})

    assert reconcile_cluster_once(gated, created.id, worker_id="w").outcome == "converged"
    cluster, operation, nodes = load(gated.session_factory, created.id)
    assert cluster.phase == ClusterPhase.RUNNING.value
    assert conditions(cluster)["AgentConnected"] == "True"
    assert conditions(cluster)["NodesReady"] == "True"
    assert operation.state == OperationState.SUCCEEDED.value
    assert all(node.ready for node in nodes)
    assert len(nodes) == 3


def test_a_node_not_ready_keeps_the_cluster_from_running(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=2),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    ready = {n.name: True for n in nodes}
    ready[nodes[-1].name] = False
    report(gated.session_factory, created.id, connected=True, ready=ready)

    result = reconcile_cluster_once(gated, created.id, worker_id="w")
    cluster, _operation, _nodes = load(gated.session_factory, created.id)
    assert result.outcome == "progressing"
    assert cluster.phase == ClusterPhase.PROVISIONING.value
    nodes_ready = next(c for c in cluster.conditions if c["type"] == "NodesReady")
    assert nodes_ready["status"] == "False"
    assert nodes_ready["message"].startswith("2 of 3 nodes Ready")


def test_an_agent_that_goes_away_shows_on_the_cluster(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    report(gated.session_factory, created.id, connected=True, ready={n.name: True for n in nodes})
    reconcile_cluster_once(gated, created.id, worker_id="w")

    report(gated.session_factory, created.id, connected=False, ready={n.name: True for n in nodes})
    reconcile_cluster_once(gated, created.id, worker_id="w")
    cluster, _operation, nodes = load(gated.session_factory, created.id)
    agent_condition = next(c for c in cluster.conditions if c["type"] == "AgentConnected")
    assert (agent_condition["status"], agent_condition["reason"]) == ("False", "AgentDisconnected")
    assert cluster.phase == ClusterPhase.UPDATING.value
    assert not any(node.ready for node in nodes)


def test_replaced_agent_sessions_show_on_agent_connected(
    gated: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    report(gated.session_factory, created.id, connected=True, ready={n.name: True for n in nodes})
    reconcile_cluster_once(gated, created.id, worker_id="w")
    cluster, _operation, _nodes = load(gated.session_factory, created.id)
    before = next(c for c in cluster.conditions if c["type"] == "AgentConnected")
    assert "replaced" not in before["message"]

    last = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with gated.session_factory.begin() as session:
        agent = session.get_one(ClusterAgent, created.id)
        agent.replacements = 3
        agent.last_replaced_at = last
    reconcile_cluster_once(gated, created.id, worker_id="w")
    cluster, _operation, _nodes = load(gated.session_factory, created.id)
    after = next(c for c in cluster.conditions if c["type"] == "AgentConnected")
    assert after["status"] == "True"
    assert "replaced a live one 3 time(s), last at 2030-01-02T03:04:05+00:00" in after["message"]
    assert after["last_transition_time"] == before["last_transition_time"]
