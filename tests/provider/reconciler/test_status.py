"""Pure parts of a pass: condition transition times, backoff growth and cap, the plan of steps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from kaas_core.db.models import Cluster
from provider.reconciler.plan import plan_steps, progress_of
from provider.reconciler.reconcile import backoff_seconds
from provider.reconciler.status import Condition, set_conditions


def test_transition_time_changes_only_when_the_status_does() -> None:
    cluster = Cluster(conditions=[])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    set_conditions(cluster, [Condition("NetworkReady", False, "Waiting", "network")], now=t0)
    set_conditions(cluster, [Condition("NetworkReady", False, "CloudTimeout", "slow")], now=t0 + timedelta(1))
    (condition,) = cluster.conditions
    assert condition["last_transition_time"] == t0.isoformat()
    assert condition["reason"] == "CloudTimeout"
    t2 = t0 + timedelta(2)
    set_conditions(cluster, [Condition("NetworkReady", True, "Ready")], now=t2)
    assert cluster.conditions[0]["status"] == "True"
    assert cluster.conditions[0]["last_transition_time"] == t2.isoformat()


def test_conditions_are_listed_in_a_stable_order() -> None:
    cluster = Cluster(conditions=[])
    set_conditions(
        cluster,
        [Condition("NodesReady", None, "Pending"), Condition("NetworkReady", True, "Ready")],
    )
    assert [(c["type"], c["status"]) for c in cluster.conditions] == [
        ("NetworkReady", "True"),
        ("NodesReady", "Unknown"),
    ]


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_seconds(n, base=2, maximum=60, rng=rng) for n in range(1, 10)]
    assert 1 <= delays[0] <= 2
    assert 2 <= delays[1] <= 4
    assert 8 <= delays[3] <= 16
    assert all(30 <= d <= 60 for d in delays[5:])


def test_a_single_control_plane_has_no_load_balancer_steps() -> None:
    single = plan_steps(Cluster(control_plane_count=1))
    ha = plan_steps(Cluster(control_plane_count=3))
    assert "load_balancer" not in single
    assert "lb_members" not in single
    assert ha.index("load_balancer") < ha.index("control_plane") < ha.index("lb_members")
    assert progress_of(single, single[0]) == 0
    assert progress_of(single, None) == 100
