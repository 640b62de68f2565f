"""The autoscaler's decisions: grow on unschedulable pods within max and quota, shrink on long-empty nodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from provider.rollout.autoscale import AutoscaledPool, PendingPod, ScaleDecision, decide

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
AFTER = timedelta(seconds=600)


def pool(name: str = "workers", *, count: int = 2, lo: int = 1, hi: int = 5, **labels: str) -> AutoscaledPool:
    return AutoscaledPool(
        name=name, count=count, min_count=lo, max_count=hi, labels=labels, vcpus=2, ram_mb=4096
    )


def pod(name: str, *, cpu: int = 500, memory_mb: int = 256, **selector: str) -> PendingPod:
    return PendingPod(
        name=name, namespace="default", cpu_millis=cpu, memory_bytes=memory_mb << 20, node_selector=selector
    )


def test_unschedulable_pods_grow_the_pool_by_the_nodes_their_requests_need() -> None:
    pending = [pod(f"p{i}", cpu=1500) for i in range(3)]  # 4.5 cores on 2-core nodes: 3 nodes

    decisions = decide(
        [pool()], pending=pending, empty_since={}, nodes_left_in_quota=None, scale_down_after=AFTER, now=NOW
    )

    assert [(d.pool, d.count) for d in decisions] == [("workers", 5)]


def test_growth_stops_at_max_and_at_the_quota() -> None:
    pending = [pod(f"p{i}", cpu=2000) for i in range(10)]

    at_max = decide(
        [pool(hi=4)],
        pending=pending,
        empty_since={},
        nodes_left_in_quota=None,
        scale_down_after=AFTER,
        now=NOW,
    )
    at_quota = decide(
        [pool(hi=9)], pending=pending, empty_since={}, nodes_left_in_quota=1, scale_down_after=AFTER, now=NOW
    )
    full = decide(
        [pool(count=5, hi=5)],
        pending=pending,
        empty_since={},
        nodes_left_in_quota=None,
        scale_down_after=AFTER,
        now=NOW,
    )

    assert [d.count for d in at_max] == [4]
    assert [d.count for d in at_quota] == [3]
    assert full == []


def test_a_pod_goes_to_the_pool_its_node_selector_matches() -> None:
    pools = [pool("a", tier="web"), pool("b", tier="batch")]

    decisions = decide(
        pools,
        pending=[pod("job", tier="batch")],
        empty_since={},
        nodes_left_in_quota=None,
        scale_down_after=AFTER,
        now=NOW,
    )

    assert [d.pool for d in decisions] == ["b"]


def test_a_node_empty_long_enough_is_removed_but_never_below_min() -> None:
    empty = {"workers": {"w-a": NOW - timedelta(seconds=601), "w-b": None}}

    shrink = decide(
        [pool(count=2, lo=1)],
        pending=[],
        empty_since=empty,
        nodes_left_in_quota=None,
        scale_down_after=AFTER,
        now=NOW,
    )
    floor = decide(
        [pool(count=1, lo=1)],
        pending=[],
        empty_since=empty,
        nodes_left_in_quota=None,
        scale_down_after=AFTER,
        now=NOW,
    )
    recent = decide(
        [pool(count=2, lo=1)],
        pending=[],
        empty_since={"workers": {"w-a": NOW - timedelta(seconds=30)}},
        nodes_left_in_quota=None,
        scale_down_after=AFTER,
        now=NOW,
    )

    assert shrink == [ScaleDecision("workers", 1, remove=("w-a",), reason=shrink[0].reason)]
    assert floor == []
    assert recent == []
