"""Cordons and drains on a real cluster through kaas's tunnel (tests/provider/rollout/conftest.py): the real
Eviction API, the real disruption controller behind PodDisruptionBudgets, the real scheduler placing
replacements, kwok nodes running the pods."""

from __future__ import annotations

from typing import Any

import pytest

from provider.rollout.drain import cordon, drain_step, uncordon
from provider.rollout.observe import ClusterAccessError, PodRef
from tests.provider.rollout.conftest import (
    Arrangement,
    ReadyPodsLow,
    RealCluster,
    in_thread,
    is_ready,
    poll,
)

pytestmark = pytest.mark.kube_real


def node_of(arrange: Arrangement, name: str) -> dict[str, Any]:
    return arrange.get(f"/api/v1/nodes/{name}")


async def test_cordon_marks_the_node_unschedulable_once_and_uncordon_clears_it(
    core_api: Any, arrange: Arrangement
) -> None:
    def scenario() -> None:
        [node] = arrange.add_nodes(1)
        assert not node_of(arrange, node)["spec"].get("unschedulable")
        cordon(core_api, node)
        assert node_of(arrange, node)["spec"]["unschedulable"] is True
        cordon(core_api, node)  # already cordoned: no error
        assert node_of(arrange, node)["spec"]["unschedulable"] is True
        uncordon(core_api, node)
        assert not node_of(arrange, node)["spec"].get("unschedulable")

        with pytest.raises(ClusterAccessError) as missing:
            cordon(core_api, f"{arrange.group}-no-such-node")
        assert missing.value.status == 404
        assert not missing.value.temporary

    await in_thread(scenario)


async def test_a_drain_step_evicts_the_nodes_pods_and_leaves_daemonset_and_mirror_pods(
    core_api: Any, arrange: Arrangement
) -> None:
    def scenario() -> None:
        nodes = arrange.add_nodes(4)
        arrange.deployment("web", replicas=3)
        arrange.budget("web", min_available=2)
        arrange.daemonset("agent")
        placed = arrange.wait_ready("web", 3)
        daemons = arrange.wait_ready("agent", 4)
        [free] = set(nodes) - set(placed.values())
        pod, node = sorted(placed.items())[0]
        [daemon] = [name for name, on in daemons.items() if on == node]
        # a kubelet's static pod, as the apiserver mirrors it
        arrange.post(
            f"/api/v1/namespaces/{arrange.namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "static", "annotations": {"kubernetes.io/config.mirror": "mirror"}},
                "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
            },
        )
        poll(
            lambda: any(p["metadata"]["name"] == "static" and is_ready(p) for p in arrange.pods()),
            what="the static pod Ready",
        )
        poll(lambda: arrange.budget_allows("web") == 1, what="the budget to allow one disruption")

        progress = drain_step(core_api, node)

        ns = arrange.namespace
        assert progress.evicted == (PodRef(ns, pod),)
        assert not progress.blocked
        assert not progress.errors
        assert set(progress.left_alone) == {PodRef(ns, daemon), PodRef(ns, "static")}
        assert progress.remaining == (PodRef(ns, pod),)  # terminating until it is gone
        assert not progress.complete
        assert node_of(arrange, node)["spec"]["unschedulable"] is True  # a drain cordons first
        # the Deployment's replacement runs on the free node, not on the cordoned one
        replaced = arrange.wait_ready("web", 3)
        assert pod not in replaced
        assert free in replaced.values()
        assert node not in replaced.values()
        poll(lambda: pod not in {p["metadata"]["name"] for p in arrange.pods()}, what=f"{pod} gone")

        again = drain_step(core_api, node)
        assert again.complete
        assert not again.evicted
        assert set(again.left_alone) == {PodRef(ns, daemon), PodRef(ns, "static")}
        # left alone: still there, still running
        running = {p["metadata"]["name"] for p in arrange.pods() if is_ready(p)}
        assert {daemon, "static"} <= running

    await in_thread(scenario)


async def test_two_nodes_drained_at_once_the_budget_refuses_the_second_and_is_never_violated(
    core_api: Any, arrange: Arrangement, real_cluster: RealCluster
) -> None:
    def scenario() -> None:
        # three nodes, one pod on each: the first pod's replacement has nowhere to go until a fourth node
        # comes (as a rollout's surge server would), so the budget's answer does not race the scheduler
        arrange.add_nodes(3)
        arrange.deployment("web", replicas=3)
        arrange.budget("web", min_available=2)
        placed = arrange.wait_ready("web", 3)
        poll(lambda: arrange.budget_allows("web") == 1, what="the budget to allow one disruption")
        (first_pod, first), (second_pod, second) = sorted(placed.items())[:2]
        watch = ReadyPodsLow(arrange, "web", real_cluster)
        ns = arrange.namespace

        first_progress = drain_step(core_api, first)
        second_progress = drain_step(core_api, second)

        assert first_progress.evicted == (PodRef(ns, first_pod),)
        assert not second_progress.evicted
        [blocked] = second_progress.blocked
        assert blocked.pod == PodRef(ns, second_pod)
        assert "disruption budget" in blocked.message
        assert second_progress.remaining == (PodRef(ns, second_pod),)
        assert not second_progress.complete
        # refused means left: never deleted another way
        [kept] = [p for p in arrange.pods() if p["metadata"]["name"] == second_pod]
        assert is_ready(kept)

        # a fourth node: once the first pod's replacement is Ready there, the budget lets the second go
        arrange.add_nodes(1)

        def second_evicted() -> bool:
            progress = drain_step(core_api, second)  # a pass, every 0.1 s
            assert not progress.errors, progress.errors
            return progress.evicted == (PodRef(ns, second_pod),)

        poll(second_evicted, what=f"the eviction of {second_pod}")
        # its replacement has no node left (two cordoned, two taken): two Ready pods from now on
        watch.settle(
            lambda pods: second_pod not in pods and sum(map(is_ready, pods.values())) == 2,
            what=f"{second_pod} gone",
        )
        assert watch.stop() == 2

    await in_thread(scenario)
