"""Writing and reading audit events.

``record`` is called by ``kaas_api.audit.middleware`` (one event per mutating request, in its own
transaction); ``search`` serves ``GET /v1/admin/audit`` and the dashboard's audit page. Events hold the
route, its path parameters and the outcome, never a body, header or token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from kaas_core.db.models import AuditEvent, utcnow

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

# which path parameter names a resource, most specific first
_RESOURCE_PARAMS = (
    ("pool", "node_pool"),
    ("operation_id", "operation"),
    ("webhook_id", "webhook"),
    ("kubeconfig_token_id", "kubeconfig_token"),
    ("token_id", "token"),
    ("user", "user"),
    ("cluster_id", "cluster"),
    ("cluster", "cluster"),
    ("region", "region"),
    ("project", "project"),
)


@dataclass(frozen=True)
class AuditRecord:
    """What the middleware learnt about one mutating request."""

    method: str
    route: str
    action: str
    path_params: dict[str, str]
    status_code: int
    via: str
    actor_id: str | None
    actor_name: str | None
    request_id: str | None
    source_ip: str | None
    extra: dict[str, Any]


def outcome_of(status_code: int) -> str:
    if status_code < 400:
        return "success"
    if status_code < 500:
        return "refused"
    return "failed"


def resource_of(path_params: dict[str, str]) -> tuple[str | None, str | None]:
    for param, kind in _RESOURCE_PARAMS:
        if path_params.get(param):
            return kind, path_params[param][:255]
    return None, None


def record(session: Session, entry: AuditRecord) -> AuditEvent:
    """Add one event (the caller commits)."""
    resource_type, resource_id = resource_of(entry.path_params)
    cluster = entry.path_params.get("cluster_id") or entry.path_params.get("cluster")
    event = AuditEvent(
        at=utcnow(),
        actor_id=entry.actor_id,
        actor_name=entry.actor_name,
        via=entry.via,
        action=entry.action[:128],
        method=entry.method[:8],
        route=entry.route[:255],
        resource_type=resource_type,
        resource_id=resource_id,
        project_id=(entry.path_params.get("project") or entry.extra.get("project") or None),
        cluster_id=(cluster or entry.extra.get("cluster") or None),
        outcome=outcome_of(entry.status_code),
        status_code=entry.status_code,
        request_id=entry.request_id,
        source_ip=(entry.source_ip or None),
        detail={"path_params": {k: v[:255] for k, v in entry.path_params.items()}, **entry.extra},
    )
    if event.project_id:
        event.project_id = str(event.project_id)[:63]
    if event.cluster_id:
        event.cluster_id = str(event.cluster_id)[:63]
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class AuditQuery:
    """Filters of the audit log; every one is optional and they combine with AND."""

    user: str | None = None  # actor name or id
    project: str | None = None
    cluster: str | None = None
    action: str | None = None  # exact action, or a prefix ending in '*'
    outcome: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0


def _filters(query: AuditQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if query.user:
        where.append(or_(AuditEvent.actor_name == query.user, AuditEvent.actor_id == query.user))
    if query.project:
        where.append(AuditEvent.project_id == query.project)
    if query.cluster:
        where.append(AuditEvent.cluster_id == query.cluster)
    if query.action:
        if query.action.endswith("*"):
            prefix = query.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(AuditEvent.action.like(prefix + "%", escape="\\"))
        else:
            where.append(AuditEvent.action == query.action)
    if query.outcome:
        where.append(AuditEvent.outcome == query.outcome)
    if query.request_id:
        where.append(AuditEvent.request_id == query.request_id)
    if query.since:
        where.append(AuditEvent.at >= query.since)
    if query.until:
        where.append(AuditEvent.at < query.until)
    return where


def search(session: Session, query: AuditQuery) -> list[AuditEvent]:
    """Newest first; ``limit`` is capped at ``MAX_PAGE_SIZE``."""
    limit = max(1, min(query.limit, MAX_PAGE_SIZE))
    return list(
        session.scalars(
            select(AuditEvent)
            .where(*_filters(query))
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .offset(max(0, query.offset))
            .limit(limit)
        )
    )
