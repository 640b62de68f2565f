"""Automatic patch upgrades, inside each cluster's maintenance window.

Called by the region sweep (``provider.tasks.sweep_leaks``, every ``KAAS_SWEEP_INTERVAL_SECONDS``) for one
region: a running cluster with a maintenance window (``kaas_core.maintenance``) that is open now, no
unfinished operation, and a newer patch of its minor among the region's ``automatic_upgrades``
(``kaas_core.upgrades.pending_upgrade``) gets an upgrade operation, requested by no one and audited as kaas;
the due-scan then queues it and the rollout does the rest as for any upgrade. The same pre-flight as the
API's applies (a cluster with one control plane is never upgraded this way: it would have downtime), and
its refusals are logged, not retried until the next sweep. Outside the window nothing starts; an upgrade
that started inside it is not stopped when the window closes (a half-replaced cluster is worse).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, Region
from kaas_core.maintenance import MaintenanceWindow, MaintenanceWindowError, inside
from kaas_core.operations import unfinished_operation
from kaas_core.upgrades import (
    UpgradeConflict,
    UpgradeRefused,
    UpgradeStrategy,
    begin_upgrade,
    pending_upgrade,
)
from provider.audit import record_provider_action

logger = logging.getLogger(__name__)


def start_automatic_upgrades(
    session_factory: sessionmaker[Session], region_name: str, *, now: datetime
) -> list[str]:
    """Start the upgrades due in open windows of the region's clusters; returns the clusters' ids."""
    started: list[str] = []
    with session_factory.begin() as session:
        clusters = session.scalars(
            select(Cluster)
            .join(Region, Region.id == Cluster.region_id)
            .where(
                Region.name == region_name,
                Cluster.phase == ClusterPhase.RUNNING.value,
                Cluster.paused.is_(False),
                Cluster.maintenance_window.is_not(None),
            )
            .options(selectinload(Cluster.region), selectinload(Cluster.node_pools))
            .order_by(Cluster.id)
        ).all()
        for cluster in clusters:
            version = pending_upgrade(cluster)
            if version is None or not _window_open(cluster, now):
                continue
            if unfinished_operation(session, cluster) is not None:
                continue
            try:
                operation = begin_upgrade(
                    session,
                    cluster,
                    to_version=version,
                    pool_names=None,
                    strategy=UpgradeStrategy(),
                    requested_by=None,
                )
            except (UpgradeRefused, UpgradeConflict) as exc:
                logger.info("cluster %s: no automatic upgrade to %s: %s", cluster.id, version, exc)
                continue
            record_provider_action(
                session,
                cluster,
                action="cluster.upgrade.automatic",
                route="provider.rollout.automatic",
                detail={"to_version": version, "operation_id": operation.id, "reason": "maintenance window"},
                now=now,
            )
            started.append(cluster.id)
            logger.info("cluster %s: automatic upgrade to %s in its maintenance window", cluster.id, version)
    return started


def _window_open(cluster: Cluster, now: datetime) -> bool:
    try:
        window = MaintenanceWindow.parse(dict(cluster.maintenance_window or {}))
    except MaintenanceWindowError:
        logger.warning("cluster %s: its maintenance window is not valid; no automatic upgrade", cluster.id)
        return False
    return inside(window, now)
