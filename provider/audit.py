"""The audit trail of what the provider does by itself: repairs, autoscaling, automatic upgrades.

The API audits what people ask (``kaas_api.audit``); these changes have no request, so the provider writes
their ``audit_events`` rows itself, in the pass's (or the sweep's) own transaction, as actor ``kaas`` via
``provider``. Called by ``provider.reconciler.reconcile`` and ``provider.rollout.automatic``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from kaas_core.db.models import AuditEvent, Cluster


def record_provider_action(
    session: Session,
    cluster: Cluster,
    *,
    action: str,
    route: str,
    detail: dict[str, Any],
    now: datetime,
    resource_type: str = "cluster",
    resource_id: str | None = None,
) -> None:
    """One successful action of kaas itself on ``cluster`` (``route``: the module that decided it)."""
    session.add(
        AuditEvent(
            at=now,
            actor_name="kaas",
            via="provider",
            action=action,
            method="-",
            route=route,
            resource_type=resource_type,
            resource_id=resource_id or cluster.id,
            project_id=cluster.project_id,
            cluster_id=cluster.id,
            outcome="success",
            status_code=0,
            detail=detail,
        )
    )
