"""Bounded recovery: every cluster with work has a due time, and the due-scan queues the overdue ones.

The clock is driven (``ProviderContext.clock``, ``now=``) wherever a lease or a due time is judged: a
test shows that a cluster becomes due, or a dead worker's lease runs out, at the time the settings promise,
without waiting for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.clusters.schemas import ClusterCreate
from kaas_api.clusters.service import create_cluster as api_create_cluster
from kaas_api.dispatch import UnitOfWork
from kaas_api.users.service import create_user
from kaas_core.db.models import Cluster, ClusterPhase, as_utc, utcnow
from kaas_core.db.session import session_scope
from kaas_core.security import SecretBox
from provider.config import ProviderSettings
from provider.reconciler.context import ProviderContext
from provider.reconciler.due import (
    Claimed,
    claim_due_clusters,
    make_undated_clusters_due,
    queue_due_clusters,
)
from provider.reconciler.observe import observe_region
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.conftest import ROOT
from tests.provider.factories import TEST_SECRET_KEY, PoolSpec, create_cluster, ensure_project, ensure_region
from tests.provider.harness import cloud_inventory, run_until_settled
from tests.provider.reconciler.doomed_pass import DOOMED_LIMITS, DOOMED_OWNER

GRACE = 10.0


def row(session_factory: sessionmaker[Session], cluster_id: str) -> Cluster:
    with session_factory() as session:
        return session.get_one(Cluster, cluster_id)


def due_at(session_factory: sessionmaker[Session], cluster_id: str) -> datetime | None:
    return as_utc(row(session_factory, cluster_id).next_reconcile_at)


def scan(
    session_factory: sessionmaker[Session], region: str = "sim", *, now: datetime, limit: int = 500
) -> list[tuple[str, int, str]]:
    sent: list[tuple[str, int, str]] = []
    queue_due_clusters(
        session_factory,
        region,
        enqueue=lambda cluster_id, ticket, queue: sent.append((cluster_id, ticket, queue)),
        now=now,
        grace_seconds=GRACE,
        limit=limit,
    )
    return sent


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


# --- what sets the due time --------------------------------------------------------------------------


def test_a_cluster_the_api_committed_but_never_sent_is_queued_by_the_next_scan(
    any_session_factory: sessionmaker[Session],
) -> None:
    """The API process killed after its commit, before its message left: the row alone is enough."""
    with session_scope(any_session_factory) as session:
        ensure_region(session)
        project = ensure_project(session)
        user, _ = create_user(session, name="alice")
        user_id = user.id
    session = any_session_factory()
    try:
        uow = UnitOfWork(session)
        cluster, _ = api_create_cluster(
            uow,
            project=session.merge(project),
            spec=ClusterCreate.model_validate(
                {"name": "lost", "region": "sim", "control_plane": {"count": 1, "flavor": "m1.small"}}
            ),
            requested_by=user_id,
            secret_box=SecretBox(TEST_SECRET_KEY),
        )
        cluster_id = cluster.id
        assert uow.pending_reconciles == [(cluster_id, "region.sim")]
        session.commit()  # ... and the process dies here: UnitOfWork.commit never sends the message
    finally:
        session.close()
    # the API's change bumped the ticket to 1; the scan's message carries it
    assert scan(any_session_factory, now=utcnow()) == [(cluster_id, 1, "region.sim")]


def test_a_converging_pass_makes_the_cluster_due_after_its_countdown_and_the_grace(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory)
    now = utcnow()
    result = reconcile_cluster_once(replace(ctx, clock=at(now)), created.id, worker_id="w")
    assert result.outcome == "progressing"
    assert result.requeue_after is not None
    expected = now + timedelta(seconds=result.requeue_after + ctx.limits.requeue_grace_seconds)
    assert due_at(ctx.session_factory, created.id) == expected
    assert result.ticket == row(ctx.session_factory, created.id).reconcile_ticket
    # its re-queue message is the fast path: until the grace is over the scan leaves the cluster to it
    assert scan(ctx.session_factory, now=expected - timedelta(seconds=0.001)) == []
    assert [c for c, _, _ in scan(ctx.session_factory, now=expected)] == [created.id]


def test_a_converged_cluster_without_the_agent_gate_is_left_to_the_bulk_observation_which_repairs_it(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    """No due time once converged (the scan never queues it, however late), until the region's bulk
    observation (``provider.reconciler.observe``) finds a server deleted behind kaas's back: then the cluster
    is due at once and the scan's claim queues it."""
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=2),))
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    assert due_at(ctx.session_factory, created.id) is None
    victim = next(n for n in row_nodes(ctx.session_factory, created.id) if n[1] == "worker")
    assert simcloud.sim.delete_server(victim[0])
    assert scan(ctx.session_factory, now=utcnow() + timedelta(days=1)) == []

    sent: list[tuple[str, int, str]] = []
    now = utcnow()
    observe_region(
        ctx.session_factory,
        "sim",
        ctx.driver("sim"),
        enqueue=lambda cluster_id, ticket, queue: sent.append((cluster_id, ticket, queue)),
        now=now,
        grace_seconds=GRACE,
    )
    [(cluster_id, ticket, queue)] = sent
    assert (cluster_id, queue) == (created.id, "region.sim")
    assert due_at(ctx.session_factory, created.id) == now + timedelta(seconds=GRACE)  # claimed
    first = reconcile_cluster_once(ctx, created.id, worker_id="w", ticket=ticket)
    assert first.outcome in {"progressing", "converged"}
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    assert cloud_inventory(simcloud.sim)["servers"] == 3


def row_nodes(session_factory: sessionmaker[Session], cluster_id: str) -> list[tuple[str, str]]:
    from kaas_core.db.models import Node

    with session_factory() as session:
        return [
            (n.server_id or "", n.role)
            for n in session.query(Node).filter(Node.cluster_id == cluster_id).all()
        ]


def test_a_failed_cluster_has_no_due_time_until_a_new_operation(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, control_plane_flavor="no-such-flavor")
    assert run_until_settled(ctx, created.id)[-1].outcome == "failed"
    assert due_at(ctx.session_factory, created.id) is None
    assert scan(ctx.session_factory, now=utcnow() + timedelta(days=1)) == []
    assert make_undated_clusters_due(ctx.session_factory, now=utcnow()) == 0  # failed on purpose: not undated


# --- what the scan queues, and what it leaves alone ------------------------------------------------------


def test_the_scan_leaves_a_cluster_to_the_live_pass_holding_its_lease(
    any_session_factory: sessionmaker[Session],
) -> None:
    from provider.reconciler.lease import acquire_lease

    created = create_cluster(any_session_factory)
    now = utcnow()
    assert acquire_lease(any_session_factory, created.id, owner="live", lease_seconds=15, now=now)
    assert scan(any_session_factory, now=now + timedelta(seconds=14)) == []
    assert [c for c, _, _ in scan(any_session_factory, now=now + timedelta(seconds=15.001))] == [created.id]


def test_the_scan_leaves_paused_and_deleted_clusters_alone(
    any_session_factory: sessionmaker[Session],
) -> None:
    paused = create_cluster(any_session_factory, name="paused")
    deleted = create_cluster(any_session_factory, name="gone", node_cidr="10.0.1.0/24")
    with session_scope(any_session_factory) as session:
        session.get_one(Cluster, paused.id).paused = True
        session.get_one(Cluster, deleted.id).phase = ClusterPhase.DELETED.value
    assert scan(any_session_factory, now=utcnow()) == []


def test_a_scan_queues_only_its_own_regions_clusters_on_that_regions_queue(
    any_session_factory: sessionmaker[Session],
) -> None:
    east = create_cluster(any_session_factory, name="e", region="east")
    west = create_cluster(any_session_factory, name="w", region="west")
    now = utcnow()
    assert [(c, q) for c, _, q in scan(any_session_factory, "east", now=now)] == [(east.id, "region.east")]
    assert [(c, q) for c, _, q in scan(any_session_factory, "west", now=now)] == [(west.id, "region.west")]
    assert scan(any_session_factory, "nowhere", now=now) == []


def test_a_claimed_cluster_is_not_claimed_again_until_its_message_is_overdue(
    any_session_factory: sessionmaker[Session],
) -> None:
    created = create_cluster(any_session_factory)
    now = utcnow()
    [(_, first_ticket, _)] = scan(any_session_factory, now=now)
    assert scan(any_session_factory, now=now + timedelta(seconds=GRACE - 1)) == []
    # the message was lost, or is stuck in a backlog: another one, and the first stays as valid as it was
    [(_, second_ticket, _)] = scan(any_session_factory, now=now + timedelta(seconds=GRACE))
    assert second_ticket == first_ticket
    assert due_at(any_session_factory, created.id) == now + timedelta(seconds=2 * GRACE)


def test_a_scan_claims_at_most_its_batch_most_overdue_first(
    any_session_factory: sessionmaker[Session],
) -> None:
    now = utcnow()
    ids = []
    for i in range(5):
        created = create_cluster(any_session_factory, name=f"c{i}", node_cidr=f"10.0.{i}.0/24")
        with session_scope(any_session_factory) as session:
            session.get_one(Cluster, created.id).next_reconcile_at = now - timedelta(seconds=10 * i)
        ids.append(created.id)
    assert {c for c, _, _ in scan(any_session_factory, now=now, limit=2)} == {ids[4], ids[3]}
    assert {c for c, _, _ in scan(any_session_factory, now=now, limit=10)} == {ids[2], ids[1], ids[0]}


def test_concurrent_scans_never_claim_a_cluster_twice(session_factory: sessionmaker[Session]) -> None:
    created = [
        create_cluster(session_factory, name=f"c{i}", node_cidr=f"10.0.{i}.0/24").id for i in range(30)
    ]
    now = utcnow()
    barrier = threading.Barrier(6)
    claims: list[list[Claimed]] = []

    def scanner() -> None:
        barrier.wait()
        claims.append(claim_due_clusters(session_factory, "sim", now=now, grace_seconds=GRACE, limit=7))

    threads = [threading.Thread(target=scanner) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [c.cluster_id for batch in claims for c in batch]
    assert len(claimed) == len(set(claimed)), "a cluster was claimed twice"
    assert set(claimed) <= set(created)
    assert len(claimed) == 30  # 6 scanners x 7 >= 30: every due cluster was claimed by one of them


def test_of_two_messages_for_one_due_pass_only_the_first_runs(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    """A reserved message Redis redelivers long after the scan took over starts no second chain."""
    created = create_cluster(ctx.session_factory)
    first = reconcile_cluster_once(ctx, created.id, worker_id="w")
    assert first.requeue_after is not None
    overdue = utcnow() + timedelta(seconds=first.requeue_after + GRACE + 1)
    [(_, ticket, _)] = scan(ctx.session_factory, now=overdue)
    assert ticket == first.ticket  # the scan's message duplicates the re-queue message ...
    second = reconcile_cluster_once(ctx, created.id, worker_id="w", ticket=ticket)
    assert second.outcome in {"progressing", "converged"}
    late = reconcile_cluster_once(ctx, created.id, worker_id="w", ticket=first.ticket)
    assert (late.outcome, late.requeue_after) == ("superseded", None)  # ... and whichever comes second drops


def test_a_message_that_finds_the_lease_held_is_dropped_not_requeued(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    from provider.reconciler.lease import acquire_lease

    created = create_cluster(ctx.session_factory)
    assert acquire_lease(ctx.session_factory, created.id, owner="other", lease_seconds=15)
    result = reconcile_cluster_once(ctx, created.id, worker_id="w")
    assert (result.outcome, result.requeue_after) == ("locked", None)


# --- the whole story: a real worker process killed mid-pass ----------------------------------------------


def test_a_cluster_stranded_by_a_worker_killed_mid_pass_moves_again_within_the_bound(
    ctx: ProviderContext, simcloud: SimCloudHandle, db_engine: Engine, tmp_path: Path
) -> None:
    """kill -9 of a process inside a pass: its lease (renewed while it lived) runs out ``lease_seconds`` after
    its last renewal, and the next scan of the region queues the cluster: within ``lease_seconds`` plus one
    scan interval of the kill, which the settings check is inside ``recovery_bound_seconds``."""
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=2),))
    marker = tmp_path / "inside"
    doomed = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.provider.reconciler.doomed_pass",
            db_engine.url.render_as_string(hide_password=False),
            str(simcloud.clouds_yaml),
            created.id,
            str(marker),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(
            lambda: marker.exists() or doomed.poll() is not None, what="the pass to get inside", timeout=60
        )
        assert doomed.poll() is None, "the doomed worker ended on its own"
        first_expiry = as_utc(row(ctx.session_factory, created.id).lease_expires_at)
        # its heartbeat renews the lease while it lives
        wait_for(
            lambda: as_utc(row(ctx.session_factory, created.id).lease_expires_at) != first_expiry,
            what="a renewal of the lease",
            timeout=30,
        )
        assert scan(ctx.session_factory, now=utcnow()) == []  # mid-pass: the scan leaves it alone
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
    killed_at = utcnow()
    stranded = row(ctx.session_factory, created.id)
    assert stranded.lease_owner == DOOMED_OWNER
    assert stranded.phase == ClusterPhase.PROVISIONING.value  # nothing of the dead pass was committed

    lease_runs_out = killed_at + timedelta(seconds=DOOMED_LIMITS.lease_seconds)
    assert scan(ctx.session_factory, now=killed_at + timedelta(seconds=DOOMED_LIMITS.lease_seconds / 2)) == []
    [(cluster_id, ticket, queue)] = scan(ctx.session_factory, now=lease_runs_out)
    assert (cluster_id, queue) == (created.id, "region.sim")
    defaults = ProviderSettings()
    assert DOOMED_LIMITS.lease_seconds + defaults.due_scan_interval_seconds <= defaults.recovery_bound_seconds

    # the queued message moves the cluster again, and it converges with nothing leaked or doubled
    moved = reconcile_cluster_once(
        replace(ctx, clock=at(lease_runs_out)), created.id, worker_id="w", ticket=ticket
    )
    assert moved.outcome in {"progressing", "converged"}
    assert as_utc(row(ctx.session_factory, created.id).last_reconciled_at) == lease_runs_out
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    inventory = cloud_inventory(simcloud.sim)
    assert (inventory["networks"], inventory["routers"], inventory["servers"]) == (1, 1, 3)


def wait_for(condition: Callable[[], bool], *, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lease_seconds": 40.0}, "exceeds KAAS_RECOVERY_BOUND_SECONDS"),
        ({"requeue_grace_seconds": 28.0}, "exceeds KAAS_RECOVERY_BOUND_SECONDS"),
        ({"lease_renew_seconds": 10.0}, "at most half of KAAS_LEASE_SECONDS"),
        ({"broker_visibility_timeout_seconds": 300.0}, "must exceed the longest countdown"),
    ],
)
def test_settings_that_cannot_keep_the_recovery_bound_are_refused(
    changes: dict[str, float], message: str
) -> None:
    assert ProviderSettings().recovery_worst_case_seconds <= ProviderSettings().recovery_bound_seconds
    with pytest.raises(ValueError, match=message):
        ProviderSettings(**changes)
