"""The cluster lease: one holder at a time, on PostgreSQL and on SQLite; renewed while its pass runs, it runs
out soon after a crash; the pass's commit gives it back with the next due time, fenced on still holding it.

Times are driven (``now=``) wherever the lease is judged, so nothing here waits for a clock."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, as_utc, utcnow
from kaas_core.db.session import session_scope
from provider.reconciler.lease import (
    Lease,
    LeaseHeartbeat,
    acquire_lease,
    release_and_schedule,
    renew_lease,
    why_not_leased,
)
from tests.provider.factories import create_cluster


def test_only_one_owner_holds_the_lease(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)
    assert not acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=60)
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)  # renewal


def test_a_released_lease_can_be_taken(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)
    assert lease is not None
    with session_scope(any_session_factory) as session:
        assert release_and_schedule(session, lease, due=None) is not None
    assert acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=60)
    with any_session_factory() as session:
        assert session.get_one(Cluster, cluster.id).lease_owner == "b"


def test_an_expired_lease_of_a_crashed_worker_is_taken_over(
    any_session_factory: sessionmaker[Session],
) -> None:
    cluster = create_cluster(any_session_factory)
    assert acquire_lease(any_session_factory, cluster.id, owner="crashed", lease_seconds=30)
    later = utcnow() + timedelta(seconds=31)
    assert not acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=30)
    assert acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=30, now=later)


def test_releasing_someone_elses_lease_does_nothing(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)
    assert lease is not None
    with session_scope(any_session_factory) as session:
        assert release_and_schedule(session, Lease(cluster.id, "b", lease.ticket), due=None) is None
    assert not acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=60)


def test_concurrent_acquirers_get_exactly_one_winner(session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(session_factory)
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def contend(owner: str) -> None:
        barrier.wait()
        if acquire_lease(session_factory, cluster.id, owner=owner, lease_seconds=60):
            wins.append(owner)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1


def due_of(session_factory: sessionmaker[Session], cluster_id: str) -> tuple[datetime | None, int]:
    with session_factory() as session:
        cluster = session.get_one(Cluster, cluster_id)
        return as_utc(cluster.next_reconcile_at), cluster.reconcile_ticket


def test_a_renewed_lease_outlives_its_first_expiry_and_runs_out_after_the_last_renewal(
    any_session_factory: sessionmaker[Session],
) -> None:
    cluster = create_cluster(any_session_factory)
    start = utcnow()
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15, now=start)
    renewed_at = start + timedelta(seconds=10)
    assert renew_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15, now=renewed_at)
    past_the_first_expiry = start + timedelta(seconds=20)
    assert not acquire_lease(
        any_session_factory, cluster.id, owner="b", lease_seconds=15, now=past_the_first_expiry
    )
    just_after_the_last_renewal_ran_out = renewed_at + timedelta(seconds=15.1)
    assert acquire_lease(
        any_session_factory, cluster.id, owner="b", lease_seconds=15, now=just_after_the_last_renewal_ran_out
    )


def test_a_lease_taken_over_cannot_be_renewed(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    start = utcnow()
    assert acquire_lease(any_session_factory, cluster.id, owner="slow", lease_seconds=15, now=start)
    later = start + timedelta(seconds=16)
    assert acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=15, now=later)
    assert not renew_lease(any_session_factory, cluster.id, owner="slow", lease_seconds=15, now=later)


def test_a_message_whose_ticket_was_superseded_gets_no_lease(
    any_session_factory: sessionmaker[Session],
) -> None:
    cluster = create_cluster(any_session_factory)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15)
    assert lease is not None
    with session_scope(any_session_factory) as session:
        new_ticket = release_and_schedule(session, lease, due=utcnow())
    assert new_ticket == lease.ticket + 1
    assert (
        acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=15, ticket=lease.ticket)
        is None
    )
    assert why_not_leased(any_session_factory, cluster.id, ticket=lease.ticket) == "superseded"
    assert acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=15, ticket=new_ticket)


def test_a_message_that_finds_the_lease_held_is_told_so(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15)
    assert lease is not None
    assert (
        acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=15, ticket=lease.ticket)
        is None
    )
    assert why_not_leased(any_session_factory, cluster.id, ticket=lease.ticket) == "locked"
    assert (
        why_not_leased(any_session_factory, "00000000-0000-0000-0000-000000000000", ticket=None) == "missing"
    )


def test_the_pass_commit_sets_its_own_due_time_when_nobody_asked_meanwhile(
    any_session_factory: sessionmaker[Session],
) -> None:
    cluster = create_cluster(any_session_factory)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15)
    assert lease is not None
    due = utcnow() + timedelta(seconds=42)
    with session_scope(any_session_factory) as session:
        release_and_schedule(session, lease, due=due)
    assert due_of(any_session_factory, cluster.id) == (due, lease.ticket + 1)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15)
    assert lease is not None
    with session_scope(any_session_factory) as session:
        release_and_schedule(session, lease, due=None)  # converged on nothing: failed, paused, deleted
    assert due_of(any_session_factory, cluster.id) == (None, lease.ticket + 1)


@pytest.mark.parametrize("pass_due_in", [42.0, None])
def test_a_request_made_during_the_pass_keeps_its_earlier_due_time(
    any_session_factory: sessionmaker[Session], pass_due_in: float | None
) -> None:
    """The API's change lands mid-pass: the pass, which loaded the older spec, must not push it back."""
    cluster = create_cluster(any_session_factory)
    lease = acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=15)
    assert lease is not None
    asked_at = utcnow()
    with session_scope(any_session_factory) as session:  # what kaas_api.clusters.service does
        row = session.get_one(Cluster, cluster.id)
        row.next_reconcile_at = asked_at
        row.reconcile_ticket = Cluster.reconcile_ticket + 1
    due = None if pass_due_in is None else asked_at + timedelta(seconds=pass_due_in)
    with session_scope(any_session_factory) as session:
        assert release_and_schedule(session, lease, due=due) == lease.ticket + 2
    assert due_of(any_session_factory, cluster.id)[0] == asked_at


def test_a_pass_whose_lease_was_taken_over_writes_nothing(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    start = utcnow()
    lease = acquire_lease(any_session_factory, cluster.id, owner="slow", lease_seconds=15, now=start)
    assert lease is not None
    assert acquire_lease(
        any_session_factory, cluster.id, owner="b", lease_seconds=15, now=start + timedelta(seconds=16)
    )
    before = due_of(any_session_factory, cluster.id)
    with session_scope(any_session_factory) as session:
        assert release_and_schedule(session, lease, due=start + timedelta(seconds=99)) is None
    assert due_of(any_session_factory, cluster.id) == before
    with any_session_factory() as session:
        assert session.get_one(Cluster, cluster.id).lease_owner == "b"


def test_the_heartbeat_keeps_pushing_the_lease_expiry_while_the_pass_runs(
    session_factory: sessionmaker[Session],
) -> None:
    cluster = create_cluster(session_factory)
    lease = acquire_lease(session_factory, cluster.id, owner="a", lease_seconds=3)
    assert lease is not None
    with session_factory() as session:
        first_expiry = as_utc(session.get_one(Cluster, cluster.id).lease_expires_at)
    assert first_expiry is not None
    with LeaseHeartbeat(session_factory, lease, lease_seconds=3, interval=0.05) as heartbeat:
        deadline = time.monotonic() + 10
        while heartbeat.renewals < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert heartbeat.renewals >= 3
    with session_factory() as session:
        renewed_expiry = as_utc(session.get_one(Cluster, cluster.id).lease_expires_at)
    assert renewed_expiry is not None
    assert renewed_expiry > first_expiry
    assert not heartbeat.lost


def test_the_heartbeat_of_a_lease_taken_over_says_it_was_lost(session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(session_factory)
    start = utcnow()
    lease = acquire_lease(session_factory, cluster.id, owner="slow", lease_seconds=1, now=start)
    assert lease is not None
    assert acquire_lease(
        session_factory, cluster.id, owner="b", lease_seconds=60, now=start + timedelta(seconds=2)
    )
    with LeaseHeartbeat(session_factory, lease, lease_seconds=1, interval=0.05) as heartbeat:
        deadline = time.monotonic() + 10
        while not heartbeat.lost and time.monotonic() < deadline:
            time.sleep(0.01)
    assert heartbeat.lost
    assert heartbeat.renewals == 0
