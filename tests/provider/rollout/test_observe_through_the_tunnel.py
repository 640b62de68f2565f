"""What ``observe_cluster`` reads from a real cluster through kaas's tunnel
(tests/provider/rollout/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from provider.rollout.drain import cordon
from provider.rollout.observe import PodRef, observe_cluster
from tests.provider.rollout.conftest import Arrangement, in_thread, poll

pytestmark = pytest.mark.kube_real


async def test_observe_reports_kubelet_versions_workload_pods_per_node_and_unschedulable_pods(
    core_api: Any, arrange: Arrangement
) -> None:
    def scenario() -> None:
        old = arrange.add_nodes(1, kubelet_version="v1.36.4")
        new = arrange.add_nodes(2, kubelet_version="v1.37.2")
        arrange.deployment("web", replicas=2)  # at most one per node: two of the three nodes
        arrange.daemonset("agent")  # one on each node, not counted
        placed = arrange.wait_ready("web", 2)
        arrange.wait_ready("agent", 3)
        cordon(core_api, new[1])
        # a pod asking for more cpu than any node has (32), with an init container asking for more memory
        arrange.post(
            f"/api/v1/namespaces/{arrange.namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "huge"},
                "spec": arrange.pod_spec(
                    containers=[
                        {
                            "name": "a",
                            "image": "busybox",
                            "resources": {"requests": {"cpu": "40", "memory": "1Gi"}},
                        },
                        {"name": "b", "image": "busybox", "resources": {"requests": {"cpu": "500m"}}},
                    ],
                    initContainers=[
                        {"name": "init", "image": "busybox", "resources": {"requests": {"memory": "3Gi"}}},
                    ],
                ),
            },
        )

        def unschedulable() -> Any:
            observed = observe_cluster(core_api)
            mine = [p for p in observed.unschedulable_pods if p.pod.namespace == arrange.namespace]
            return observed if mine else None

        observation = poll(unschedulable, what="the scheduler to find no node for the huge pod")

        nodes = {n.name: n for n in observation.nodes if n.name in arrange.nodes}
        assert {name: n.kubelet_version for name, n in nodes.items()} == {
            old[0]: "v1.36.4",
            new[0]: "v1.37.2",
            new[1]: "v1.37.2",
        }
        assert all(n.ready and n.ready_since is not None for n in nodes.values())
        assert {name: n.unschedulable for name, n in nodes.items()} == {
            old[0]: False,
            new[0]: False,
            new[1]: True,
        }
        per_node = {name: list(placed.values()).count(name) for name in arrange.nodes}
        assert {name: n.workload_pods for name, n in nodes.items()} == per_node
        assert sorted(per_node.values()) == [0, 1, 1]
        [huge] = [p for p in observation.unschedulable_pods if p.pod.namespace == arrange.namespace]
        assert huge.pod == PodRef(arrange.namespace, "huge")
        assert huge.cpu_millicores == 40_500
        assert huge.memory_bytes == 3 * 2**30
        assert "Insufficient cpu" in huge.message

    await in_thread(scenario)
