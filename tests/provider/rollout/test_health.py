"""Self-healing's verdicts: which NotReady workers are replaced, and when a pool is short-circuited."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from provider.rollout.health import HealthPolicy, allowed_unhealthy, judge_health
from provider.rollout.plan import CONTROL_PLANE, WORKER, Member

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
POLICY = HealthPolicy(unhealthy_after=timedelta(seconds=300), max_unhealthy_percent=40)


def node(name: str, *, ready: bool = True, role: str = WORKER, pool: str | None = "workers") -> Member:
    return Member(
        name=name,
        role=role,
        pool=pool,
        slot=None,
        attempt=1,
        version="1.37.2",
        active=True,
        ready=ready,
        first_seen=NOW - timedelta(hours=1),
    )


def long_ago() -> datetime:
    return NOW - timedelta(seconds=301)


def test_a_worker_not_ready_past_the_threshold_is_replaced() -> None:
    members = [node("w-a", ready=False), node("w-b"), node("w-c")]

    verdict = judge_health(members, not_ready_since={"w-a": long_ago()}, policy=POLICY, now=NOW)

    assert verdict.replace == ["w-a"]
    assert verdict.short_circuited == {}


def test_a_worker_not_ready_for_less_than_the_threshold_is_left() -> None:
    members = [node("w-a", ready=False), node("w-b"), node("w-c")]

    verdict = judge_health(
        members, not_ready_since={"w-a": NOW - timedelta(seconds=299)}, policy=POLICY, now=NOW
    )

    assert verdict.replace == []


def test_three_of_three_not_ready_short_circuits_instead_of_replacing_all() -> None:
    members = [node("w-a", ready=False), node("w-b", ready=False), node("w-c", ready=False)]
    since = {m.name: long_ago() for m in members}

    verdict = judge_health(members, not_ready_since=since, policy=POLICY, now=NOW)

    assert verdict.replace == []
    assert "3 of 3 nodes of pool workers" in verdict.short_circuited["workers"]
    assert verdict.unhealthy["workers"] == ["w-a", "w-b", "w-c"]


def test_control_planes_and_draining_nodes_are_never_replaced_here() -> None:
    members = [
        node("cp-1", ready=False, role=CONTROL_PLANE, pool=None),
        replace(node("w-a", ready=False), draining_since=NOW),
        node("w-b"),
    ]
    since = {"cp-1": long_ago(), "w-a": long_ago()}

    verdict = judge_health(members, not_ready_since=since, policy=POLICY, now=NOW)

    assert verdict.replace == []


def test_the_allowance_is_the_percentage_rounded_down_but_at_least_one() -> None:
    assert allowed_unhealthy(3, 40) == 1
    assert allowed_unhealthy(10, 40) == 4
    assert allowed_unhealthy(1, 0) == 1
