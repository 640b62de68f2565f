"""The agent gate: a cluster is running only when its agent is connected and reports every node Ready.

The cloud steps make servers; only the agent inside the cluster can say Kubernetes works. The tunnel
server writes what the agent reports into ``cluster_agents``; a pass reads that row here (no cloud calls)
and turns it into the AgentConnected and NodesReady conditions and the nodes' ``ready`` flags.
AgentConnected's message also says how often a newer agent session replaced a live one, and when last (the
tunnel server counts them in ``cluster_agents``; see ``kaas_tunnel.store.admit_session``).
Called by ``provider.reconciler.reconcile`` on every pass of a live cluster, when the context requires
agents (every deployment does; the cloud-side reconciler tests run without it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from kaas_core.db.models import Cluster, ClusterAgent, Node, as_utc
from provider.reconciler.status import Condition

AGENT_CONNECTED = "AgentConnected"
NODES_READY = "NodesReady"


@dataclass(frozen=True)
class AgentGate:
    conditions: list[Condition]
    ready: bool
    message: str
    # the agent's session is up (whatever the nodes say): kaas can reach the cluster through the tunnel
    connected: bool = False
    tunnel_address: str | None = None


def expected_node_count(cluster: Cluster) -> int:
    return cluster.control_plane_count + sum(pool.count for pool in cluster.node_pools)


def replacements_note(agent: ClusterAgent) -> str:
    """What AgentConnected's message says of replaced sessions; empty when none ever was."""
    if not agent.replacements:
        return ""
    last = as_utc(agent.last_replaced_at)
    when = last.isoformat() if last else "an unknown time"
    return (
        f"; a newer agent session replaced a live one {agent.replacements} time(s), last at {when}"
        " (an agent restart, or a second agent using this cluster's token)"
    )


def check_agent(session: Session, cluster: Cluster, nodes: list[Node], *, tunnel_url: str) -> AgentGate:
    """Read the agent's last report; mark nodes Ready by name; say what, if anything, is missing."""
    agent = session.get(ClusterAgent, cluster.id)
    reported = {n.get("name"): bool(n.get("ready")) for n in (agent.nodes if agent else []) or []}
    for node in nodes:
        node.ready = bool(agent and agent.connected and reported.get(node.name, False))

    if agent is None or not agent.connected:
        if agent is None or agent.connected_at is None:
            message = (
                "the cluster's agent has not connected yet; the nodes must reach "
                f"{tunnel_url} (outbound) once they have booted"
            )
            reason = "AgentNotConnected"
        else:
            since = agent.disconnected_at.isoformat() if agent.disconnected_at else "an unknown time"
            message = f"the cluster's agent is disconnected since {since}; it reconnects by itself"
            message += replacements_note(agent)
            reason = "AgentDisconnected"
        return AgentGate(
            [
                Condition(AGENT_CONNECTED, False, reason, message),
                Condition(NODES_READY, None, "AgentNotConnected", "no report from the agent"),
            ],
            ready=False,
            message=message,
        )

    address = agent.tunnel_address
    connected = Condition(
        AGENT_CONNECTED,
        True,
        "Connected",
        f"Kubernetes {agent.kubernetes_version or '?'}" + replacements_note(agent),
    )
    expected = expected_node_count(cluster)
    ready_count = sum(1 for node in nodes if node.ready)
    if agent.nodes_total is None:
        message = f"the agent cannot list the cluster's nodes: {agent.last_error or 'no report yet'}"
        return AgentGate(
            [connected, Condition(NODES_READY, None, "NoNodeReport", message)],
            False,
            message,
            connected=True,
            tunnel_address=address,
        )
    if ready_count < expected:
        message = f"{ready_count} of {expected} nodes Ready (as the agent reports them)"
        return AgentGate(
            [connected, Condition(NODES_READY, False, "NodesNotReady", message)],
            False,
            message,
            connected=True,
            tunnel_address=address,
        )
    return AgentGate(
        [connected, Condition(NODES_READY, True, "Ready", f"{ready_count} of {expected} nodes Ready")],
        ready=True,
        message="",
        connected=True,
        tunnel_address=address,
    )
