"""Simulated nodes: boots a cluster's kaas agent from its servers' cloud-init user-data.

Neither simcloud nor the fake-virt OpenStack boots a VM, so nothing would run the agent that cloud-init
starts on a real control-plane node. ``NodeBooter`` watches kaas's servers through the Nova API and, per
cluster, runs a stand-in kube-apiserver and the real kaas agent pointed at it. Used by ``kaas up`` (the
embedded mode) and by end-to-end tests. Imports neither ``kaas_api``, ``provider`` nor ``kaas_cli``.
"""

from nodesim.booter import AgentRunner, ClusterInfo, NodeBooter
from nodesim.userdata import NodeUserData, UserDataError, parse_user_data

__all__ = ["AgentRunner", "ClusterInfo", "NodeBooter", "NodeUserData", "UserDataError", "parse_user_data"]
