"""The observation of listed objects, and what a pod is to a drain (pure: no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from provider.rollout.observe import (
    PodRef,
    is_daemonset_pod,
    is_mirror_pod,
    observation_from,
    pod_requests,
)


def pod(name: str, *, node: str | None = None, owner: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns"}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    return {"metadata": metadata, "spec": {"nodeName": node, **spec}, "status": {"phase": "Running"}}


def node(name: str, *, ready: str = "True") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {},
        "status": {
            "nodeInfo": {"kubeletVersion": "v1.37.2"},
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": "2026-01-02T03:04:05Z"}],
        },
    }


def test_requests_sum_the_containers_and_sidecars_or_take_the_largest_init_container() -> None:
    spec = pod(
        "p",
        containers=[
            {"resources": {"requests": {"cpu": "250m", "memory": "100Mi"}}},
            {"resources": {"requests": {"cpu": "1"}}},
            {},
        ],
        initContainers=[
            {"resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
            {"restartPolicy": "Always", "resources": {"requests": {"memory": "28Mi"}}},
        ],
        overhead={"cpu": "10m"},
    )
    # cpu: max(0.25 + 1 + 0 sidecar, 2 init) + 0.01; memory: max(100Mi + 28Mi, 10Mi)
    assert pod_requests(spec) == (2010, 128 * 2**20)


def test_a_pod_without_requests_requests_nothing() -> None:
    assert pod_requests(pod("p", containers=[{"name": "main"}])) == (0, 0)


def test_daemonset_pods_are_the_ones_a_daemonset_controls_and_mirror_pods_carry_the_annotation() -> None:
    assert is_daemonset_pod(pod("d", owner="DaemonSet"))
    assert not is_daemonset_pod(pod("r", owner="ReplicaSet"))
    not_controller = pod("o")
    not_controller["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "x", "controller": False}]
    assert not is_daemonset_pod(not_controller)
    mirror = pod("m")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert is_mirror_pod(mirror)
    assert not is_mirror_pod(pod("m"))


def test_a_node_counts_its_pods_but_daemonsets_and_mirror_pods() -> None:
    mirror = pod("static", node="a")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    observed = observation_from(
        [node("a"), node("b", ready="False")],
        [
            pod("w1", node="a"),
            pod("w2", node="a", owner="ReplicaSet"),
            pod("d", node="a", owner="DaemonSet"),
            mirror,
            pod("d2", node="b", owner="DaemonSet"),
        ],
    )
    a, b = observed.node("a"), observed.node("b")
    assert a is not None
    assert b is not None
    assert (a.workload_pods, b.workload_pods) == (2, 0)
    assert (a.ready, b.ready) == (True, False)
    assert b.ready_since == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert observed.node("c") is None


def test_only_pending_pods_the_scheduler_called_unschedulable_are_reported() -> None:
    def pending(name: str, reason: str) -> dict[str, Any]:
        p = pod(name, containers=[{"resources": {"requests": {"cpu": "3"}}}])
        p["status"] = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": reason, "message": "0/3 nodes"}
            ],
        }
        return p

    observed = observation_from(
        [], [pending("u", "Unschedulable"), pending("g", "SchedulingGated"), pod("running", node="a")]
    )
    [only] = observed.unschedulable_pods
    assert only.pod == PodRef("ns", "u")
    assert (only.cpu_millicores, only.message) == (3000, "0/3 nodes")
