"""The ordered steps of a cluster that should exist, and which condition each one feeds.

Pure data, no I/O: ``provider.reconciler.reconcile`` walks ``plan_steps(cluster)`` in order and stops at the
first step that is not done yet; the step's position gives the operation's progress.
"""

from __future__ import annotations

from kaas_core.db.models import Cluster

NETWORK_READY = "NetworkReady"
CONTROL_PLANE_READY = "ControlPlaneReady"
NODES_READY = "NodesReady"

ALL_STEPS = (
    "network",
    "security_groups",
    "server_groups",
    "cloud_credential",
    "load_balancer",
    "control_plane",
    "lb_members",
    "node_pools",
    "wait_active",
)

STEP_CONDITION = {
    "network": NETWORK_READY,
    "security_groups": NETWORK_READY,
    "server_groups": CONTROL_PLANE_READY,
    "cloud_credential": CONTROL_PLANE_READY,
    "load_balancer": CONTROL_PLANE_READY,
    "control_plane": CONTROL_PLANE_READY,
    "lb_members": CONTROL_PLANE_READY,
    "node_pools": NODES_READY,
    "wait_active": NODES_READY,
}


def needs_load_balancer(cluster: Cluster) -> bool:
    """A highly available control plane (3 nodes) sits behind an Octavia load balancer; one node does not."""
    return load_balanced(cluster.control_plane_count)


def load_balanced(control_plane_count: int) -> bool:
    """``needs_load_balancer`` of a control plane of this many nodes."""
    return control_plane_count > 1


def plan_steps(cluster: Cluster) -> list[str]:
    """The steps of this cluster, in order."""
    skip = set() if needs_load_balancer(cluster) else {"load_balancer", "lb_members"}
    return [step for step in ALL_STEPS if step not in skip]


def progress_of(steps: list[str], reached: str | None) -> int:
    """Percent done when every step before ``reached`` is done (``None``: all of them)."""
    if reached is None:
        return 100
    return int(100 * steps.index(reached) / len(steps))
