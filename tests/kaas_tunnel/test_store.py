"""Admitting agent sessions: a newer session that replaces a live one is counted, and limited per cluster
and window (``kaas_tunnel.store.admit_session``), on the real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import ClusterAgent, utcnow
from kaas_tunnel import store
from tests.provider.factories import CreatedCluster, create_cluster

WINDOW = timedelta(seconds=60)


def connect(session_factory: sessionmaker[Session], cluster: CreatedCluster, session_id: str) -> None:
    store.record_connected(session_factory, cluster_id=cluster.id, session_id=session_id, address="x")


def agent_row(session_factory: sessionmaker[Session], cluster: CreatedCluster) -> ClusterAgent:
    with session_factory() as session:
        return session.get_one(ClusterAgent, cluster.id)


def test_a_first_session_replaces_nothing_and_is_never_limited(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    for _ in range(3):
        admission = store.admit_session(session_factory, cluster_id=cluster.id, limit=1, window=WINDOW)
        assert admission == store.Admission(replaces=None)


def test_a_session_after_the_old_one_was_recorded_gone_is_not_a_replacement(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    connect(session_factory, cluster, "old")
    store.record_disconnected(session_factory, cluster_id=cluster.id, session_id="old")
    admission = store.admit_session(session_factory, cluster_id=cluster.id, limit=1, window=WINDOW)
    assert admission.replaces is None
    assert agent_row(session_factory, cluster).replacements == 0


def test_replacing_a_live_session_is_counted_with_its_time(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    connect(session_factory, cluster, "old")
    now = utcnow()
    admission = store.admit_session(session_factory, cluster_id=cluster.id, limit=5, window=WINDOW, now=now)
    assert admission == store.Admission(replaces="old", replacements=1)
    row = agent_row(session_factory, cluster)
    assert (row.replacements, row.replacements_in_window) == (1, 1)
    assert row.last_replaced_at == now


def test_beyond_the_limit_a_replacement_is_refused_until_the_window_ends(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    connect(session_factory, cluster, "live")
    start = utcnow()
    for second in (0, 10):
        admitted = store.admit_session(
            session_factory,
            cluster_id=cluster.id,
            limit=2,
            window=WINDOW,
            now=start + timedelta(seconds=second),
        )
        assert not admitted.refused
    refused = store.admit_session(
        session_factory, cluster_id=cluster.id, limit=2, window=WINDOW, now=start + timedelta(seconds=20)
    )
    assert refused.refused
    assert refused.replaces == "live"
    assert refused.retry_after_seconds == 40
    assert agent_row(session_factory, cluster).replacements == 2  # a refused dial replaced nothing
    later = store.admit_session(
        session_factory, cluster_id=cluster.id, limit=2, window=WINDOW, now=start + timedelta(seconds=61)
    )
    assert not later.refused
    assert later.replacements == 3


def test_the_token_check_and_the_admission_are_one_transaction_with_the_same_answers(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    assert store.authenticate_and_admit(session_factory, "kaasagent_not-a-token", limit=1, window=WINDOW) == (
        None,
        None,
    )
    cluster_id, first = store.authenticate_and_admit(
        session_factory, cluster.agent_token, limit=1, window=WINDOW
    )
    assert (cluster_id, first) == (cluster.id, store.Admission(replaces=None))
    store.record_connected(session_factory, cluster_id=cluster.id, session_id="s1", address="http://a")
    _, second = store.authenticate_and_admit(session_factory, cluster.agent_token, limit=1, window=WINDOW)
    assert second == store.Admission(replaces="s1", replacements=1)
    _, third = store.authenticate_and_admit(session_factory, cluster.agent_token, limit=1, window=WINDOW)
    assert third is not None
    assert third.refused


def test_many_dials_in_one_transaction_answer_each_in_order_as_one_after_the_other_would(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    other = create_cluster(session_factory, name="other")
    store.record_connected(session_factory, cluster_id=cluster.id, session_id="live", address="http://a")
    answers = store.authenticate_and_admit_many(
        session_factory,
        [cluster.agent_token, "kaasagent_not-a-token", other.agent_token, cluster.agent_token, ""],
        limit=1,
        window=WINDOW,
    )
    assert [cluster_id for cluster_id, _ in answers] == [cluster.id, None, other.id, cluster.id, None]
    first, unknown, other_first, second, empty = (admission for _, admission in answers)
    assert first == store.Admission(replaces="live", replacements=1)
    assert other_first == store.Admission(replaces=None)
    assert second is not None
    assert second.refused  # the batch's second replacement of one cluster counts against the limit of 1
    assert unknown is None
    assert empty is None
    assert agent_row(session_factory, cluster).replacements == 1


def test_changes_in_one_transaction_apply_in_order_and_skip_rows_a_newer_session_owns(
    session_factory: sessionmaker[Session], cluster: CreatedCluster
) -> None:
    other = create_cluster(session_factory, name="other")
    store.apply_changes(
        session_factory,
        [
            store.connected(cluster_id=cluster.id, session_id="old", address="http://a"),
            store.connected(cluster_id=other.id, session_id="o1", address="http://b"),
            store.connected(cluster_id=cluster.id, session_id="new", address="http://c"),
            store.disconnected(cluster_id=cluster.id, session_id="old"),  # the newer session keeps the row
            store.disconnected(cluster_id=other.id, session_id="o1"),
            store.disconnected(cluster_id="00000000-0000-0000-0000-000000000000", session_id="x"),  # no row
        ],
    )
    row = agent_row(session_factory, cluster)
    assert (row.connected, row.session_id, row.tunnel_address) == (True, "new", "http://c")
    gone = agent_row(session_factory, other)
    assert (gone.connected, gone.session_id) == (False, "o1")
    assert gone.disconnected_at is not None
