"""The rollout planner's rules, pass by pass, on made-up members (the planner is pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from provider.rollout.plan import (
    CONTROL_PLANE,
    WORKER,
    Member,
    NewServer,
    PoolTarget,
    RolloutPolicy,
    RolloutTarget,
    plan_rollout,
)

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
OLD, NEW = "1.36.3", "1.37.2"


def cp(slot: int, version: str = OLD, *, attempt: int = 1, ready: bool = True, created: int = 0) -> Member:
    name = f"kaas-x-cp-{slot}" + (f"-r{attempt}" if attempt > 1 else "")
    return Member(
        name=name,
        role=CONTROL_PLANE,
        pool=None,
        slot=slot,
        attempt=attempt,
        version=version,
        active=True,
        ready=ready,
        first_seen=NOW - timedelta(minutes=5),
        created=created or slot,
    )


def worker(
    name: str, version: str = OLD, *, ready: bool = True, created: int = 0, pods: int | None = None
) -> Member:
    return Member(
        name=name,
        role=WORKER,
        pool="workers",
        slot=None,
        attempt=1,
        version=version,
        active=True,
        ready=ready,
        first_seen=NOW - timedelta(minutes=5),
        created=created,
        pods=pods,
    )


def target(
    *, count: int = 3, replace_outdated: bool = True, version: str = NEW, **kw: object
) -> RolloutTarget:
    pool = PoolTarget(
        name="workers", count=count, version=version, nodes_to_remove=tuple(kw.pop("remove", ()))
    )  # type: ignore[arg-type]
    return RolloutTarget(
        control_plane_count=3,
        control_plane_version=version,
        pools=(pool,),
        replace_outdated=replace_outdated,
        **kw,  # type: ignore[arg-type]
    )


CPS_OLD = [cp(1), cp(2), cp(3)]
CPS_NEW = [
    cp(1, NEW, attempt=2, created=11),
    cp(2, NEW, attempt=2, created=12),
    cp(3, NEW, attempt=2, created=13),
]
WORKERS_OLD = [worker("w-a", created=1), worker("w-b", created=2), worker("w-c", created=3)]


def test_an_upgrade_starts_with_one_control_plane_replacement_in_the_oldest_slot_and_nothing_else() -> None:
    plan = plan_rollout([*CPS_OLD, *WORKERS_OLD], target(), RolloutPolicy(), now=NOW)

    assert plan.create == [NewServer(role=CONTROL_PLANE, pool=None, slot=1, attempt=2, version=NEW)]
    assert plan.drain == []
    assert not plan.done
    assert {row["state"] for row in plan.nodes} == {"old"}


def test_the_old_control_plane_is_drained_only_once_its_replacement_is_ready() -> None:
    surging = cp(1, NEW, attempt=2, ready=False, created=10)
    waiting = plan_rollout([*CPS_OLD, surging, *WORKERS_OLD], target(), RolloutPolicy(), now=NOW)
    assert waiting.idle
    assert "kaas-x-cp-1-r2" in waiting.waiting_for

    ready = plan_rollout(
        [*CPS_OLD, replace(surging, ready=True), *WORKERS_OLD], target(), RolloutPolicy(), now=NOW
    )
    assert ready.drain == ["kaas-x-cp-1"]  # the outdated server of the replaced slot, not another
    assert ready.create == []


def test_never_two_control_plane_changes_at_once() -> None:
    draining = replace(cp(1), draining_since=NOW - timedelta(seconds=5))
    members = [draining, cp(2), cp(3), cp(1, NEW, attempt=2, created=10), *WORKERS_OLD]

    plan = plan_rollout(members, target(), RolloutPolicy(), now=NOW)

    assert plan.drain == ["kaas-x-cp-1"]
    assert plan.create == []


def test_no_control_plane_is_replaced_while_one_is_not_ready() -> None:
    plan = plan_rollout([cp(1), cp(2, ready=False), cp(3), *WORKERS_OLD], target(), RolloutPolicy(), now=NOW)

    assert plan.idle
    assert "kaas-x-cp-2" in plan.waiting_for


def test_pools_wait_for_the_control_plane() -> None:
    members = [cp(1, NEW, attempt=2), cp(2), cp(3), *WORKERS_OLD]

    plan = plan_rollout(members, target(), RolloutPolicy(), now=NOW)

    assert [new.role for new in plan.create] == [CONTROL_PLANE]
    assert plan.drain == []


def test_a_pool_surges_then_drains_one_old_node_per_ready_new_one() -> None:
    policy = RolloutPolicy(max_surge=1, max_unavailable=0)
    first = plan_rollout([*CPS_NEW, *WORKERS_OLD], target(), policy, now=NOW)
    assert first.create == [NewServer(role=WORKER, pool="workers", slot=None, attempt=1, version=NEW)]
    assert first.drain == []

    not_ready = worker("w-new1", NEW, ready=False, created=10)
    second = plan_rollout([*CPS_NEW, *WORKERS_OLD, not_ready], target(), policy, now=NOW)
    assert second.idle  # no old node goes before the new one is Ready: available stays at 3

    ready = replace(not_ready, ready=True)
    third = plan_rollout([*CPS_NEW, *WORKERS_OLD, ready], target(), policy, now=NOW)
    assert third.drain == ["w-c"]  # outdated nodes go newest first
    assert third.create == []


def test_max_unavailable_without_surge_drains_first_and_then_creates() -> None:
    policy = RolloutPolicy(max_surge=0, max_unavailable=1)
    plan = plan_rollout([*CPS_NEW, *WORKERS_OLD], target(), policy, now=NOW)
    assert plan.create == []
    assert len(plan.drain) == 1

    gone_one = WORKERS_OLD[1:]
    after = plan_rollout([*CPS_NEW, *gone_one], target(), policy, now=NOW)
    assert [new.role for new in after.create] == [WORKER]


def test_a_new_node_not_ready_in_time_pauses_with_its_name() -> None:
    late = replace(worker("w-new1", NEW, ready=False), first_seen=NOW - timedelta(seconds=700))
    plan = plan_rollout([*CPS_NEW, *WORKERS_OLD, late], target(), RolloutPolicy(), now=NOW)

    assert plan.pause_reason is not None
    assert "w-new1" in plan.pause_reason
    assert "Ready" in plan.pause_reason
    assert plan.idle


def test_a_drain_past_its_timeout_pauses_and_names_the_pdb() -> None:
    stuck = replace(WORKERS_OLD[0], draining_since=NOW - timedelta(seconds=601))
    members = [*CPS_NEW, stuck, *WORKERS_OLD[1:], worker("w-new1", NEW)]
    plan = plan_rollout(members, target(), RolloutPolicy(drain_timeout=timedelta(seconds=600)), now=NOW)

    assert plan.pause_reason is not None
    assert "w-a" in plan.pause_reason
    assert "PodDisruptionBudget" in plan.pause_reason


def test_a_finished_upgrade_is_done() -> None:
    members = [*CPS_NEW, worker("w-1", NEW), worker("w-2", NEW), worker("w-3", NEW)]
    plan = plan_rollout(members, target(), RolloutPolicy(), now=NOW)

    assert plan.done
    assert {row["state"] for row in plan.nodes} == {"new"}


def test_a_rollback_replaces_the_new_nodes_by_the_old_version_the_same_way() -> None:
    members = [cp(1, NEW, attempt=2), cp(2), cp(3), *WORKERS_OLD]
    plan = plan_rollout(members, target(version=OLD), RolloutPolicy(), now=NOW)

    assert plan.create == [NewServer(role=CONTROL_PLANE, pool=None, slot=1, attempt=3, version=OLD)]


def test_outside_an_upgrade_versions_are_left_alone() -> None:
    plan = plan_rollout([*CPS_OLD, *WORKERS_OLD], target(replace_outdated=False), RolloutPolicy(), now=NOW)

    assert plan.idle
    assert plan.done


def test_scale_down_drains_the_callers_names_first_then_the_emptiest() -> None:
    members = [*CPS_OLD, worker("w-a", pods=5), worker("w-b", pods=0), worker("w-c", pods=2)]
    emptiest = plan_rollout(members, target(count=2, replace_outdated=False), RolloutPolicy(), now=NOW)
    assert emptiest.drain == ["w-b"]

    chosen = plan_rollout(
        members, target(count=1, replace_outdated=False, remove=("w-a",)), RolloutPolicy(), now=NOW
    )
    assert chosen.drain == ["w-a", "w-b"]


def test_scale_down_keeps_draining_without_starting_more_than_the_surplus() -> None:
    draining = replace(worker("w-a"), draining_since=NOW - timedelta(seconds=10))
    members = [*CPS_OLD, draining, worker("w-b"), worker("w-c")]
    plan = plan_rollout(members, target(count=2, replace_outdated=False), RolloutPolicy(), now=NOW)

    assert plan.drain == ["w-a"]


def test_cancel_starts_nothing_new_but_finishes_the_node_in_hand() -> None:
    draining = replace(WORKERS_OLD[0], draining_since=NOW - timedelta(seconds=10))
    members = [*CPS_NEW, draining, *WORKERS_OLD[1:], worker("w-new1", NEW)]
    plan = plan_rollout(members, target(cancel_requested=True), RolloutPolicy(), now=NOW)

    assert plan.drain == ["w-a"]
    assert plan.create == []


def test_a_resumed_operation_measures_its_timeouts_from_the_resume() -> None:
    stuck = replace(WORKERS_OLD[0], draining_since=NOW - timedelta(seconds=900))
    members = [*CPS_NEW, stuck, *WORKERS_OLD[1:], worker("w-new1", NEW)]
    resumed = RolloutPolicy(drain_timeout=timedelta(seconds=600), clocks_from=NOW - timedelta(seconds=30))

    plan = plan_rollout(members, target(), resumed, now=NOW)

    assert plan.pause_reason is None
    assert plan.drain == ["w-a"]
    later = plan_rollout(members, target(), resumed, now=NOW + timedelta(seconds=600))
    assert later.pause_reason is not None
