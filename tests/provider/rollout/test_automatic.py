"""Automatic patch upgrades start only inside a cluster's open maintenance window, and only when allowed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import (
    AuditEvent,
    Cluster,
    ClusterPhase,
    Operation,
    OperationKind,
    OperationState,
    Region,
)
from provider.rollout.automatic import start_automatic_upgrades
from tests.provider.factories import PoolSpec, create_cluster

# Sunday 2026-12-06 02:30 in Tokyo is Saturday 17:30 UTC
INSIDE = datetime(2026, 12, 5, 17, 30, tzinfo=UTC)
OUTSIDE = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WINDOW = {"day": "sun", "start": "02:00", "duration_minutes": 120, "time_zone": "Asia/Tokyo"}


def running(
    session_factory: sessionmaker[Session],
    *,
    name: str = "demo",
    control_planes: int = 3,
    window: dict[str, object] | None = WINDOW,
) -> str:
    created = create_cluster(
        session_factory, name=name, control_plane_count=control_planes, pools=(PoolSpec(count=2),)
    )
    with session_factory.begin() as session:
        cluster = session.get_one(Cluster, created.id)
        cluster.phase = ClusterPhase.RUNNING.value
        cluster.maintenance_window = window
        for operation in session.scalars(select(Operation).where(Operation.cluster_id == created.id)):
            operation.state = OperationState.SUCCEEDED.value
        region = session.scalars(select(Region).where(Region.name == "sim")).one()
        region.kubernetes_versions = ["1.30.2", "1.30.5"]
        region.automatic_upgrades = ["1.30.5"]
    return created.id


def upgrades(session_factory: sessionmaker[Session], cluster_id: str) -> list[Operation]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(Operation).where(
                    Operation.cluster_id == cluster_id, Operation.kind == OperationKind.UPGRADE.value
                )
            )
        )


def test_inside_the_window_the_region_patch_starts_an_audited_upgrade(
    session_factory: sessionmaker[Session],
) -> None:
    cluster_id = running(session_factory)

    started = start_automatic_upgrades(session_factory, "sim", now=INSIDE)

    assert started == [cluster_id]
    (operation,) = upgrades(session_factory, cluster_id)
    assert operation.params["to_version"] == "1.30.5"
    assert operation.requested_by is None
    with session_factory() as session:
        assert session.get_one(Cluster, cluster_id).kubernetes_version == "1.30.5"
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "cluster.upgrade.automatic")
        ).one()
        assert audit.detail["operation_id"] == operation.id
    assert start_automatic_upgrades(session_factory, "sim", now=INSIDE) == []  # one at a time


def test_outside_the_window_or_without_one_nothing_starts(session_factory: sessionmaker[Session]) -> None:
    with_window = running(session_factory)

    assert start_automatic_upgrades(session_factory, "sim", now=OUTSIDE) == []
    assert upgrades(session_factory, with_window) == []


def test_a_cluster_without_a_window_or_with_one_control_plane_is_not_upgraded(
    session_factory: sessionmaker[Session],
) -> None:
    no_window = running(session_factory, window=None)
    single = running(session_factory, name="single", control_planes=1)

    assert start_automatic_upgrades(session_factory, "sim", now=INSIDE) == []
    assert upgrades(session_factory, no_window) == []
    assert upgrades(session_factory, single) == []
