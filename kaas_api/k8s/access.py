"""Who may reach a user cluster through the k8s proxy, and as whom the agent impersonates them.

Owned by ``kaas_api.k8s``; called by ``kaas_api.k8s.proxy`` (in a worker thread: it uses the sync session).
A user API token of a project member, or a kubeconfig token of exactly this cluster, authenticates; any
project role (viewer and up) reaches the cluster, and the user cluster's own RBAC decides what each role may
do through the groups we send. A cluster the caller cannot see, an unknown or deleted one: all 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaas_api.auth.service import authenticate, project_role
from kaas_api.db.models import Cluster, Project, Role
from kaas_api.errors import NotFound
from kaas_api.validation import is_uuid

AUTHENTICATED_GROUP = "kaas:authenticated"
GROUP_PREFIX = "kaas:"


@dataclass(frozen=True)
class ProxyIdentity:
    """The caller as the cluster sees them; ``user`` is the kaas user name (the tunnel adds ``kaas:``)."""

    user: str
    groups: tuple[str, ...]
    token_id: str
    token_kind: str
    cluster_id: str
    cluster_name: str
    project: str


def groups_for(role: Role | None) -> tuple[str, ...]:
    """The impersonated groups of a project role; a global admin who is not a member acts as an owner."""
    effective = role or Role.OWNER
    return (AUTHENTICATED_GROUP, GROUP_PREFIX + effective.value)


def authorize_cluster(session: Session, authorization: str | None, cluster_id: str) -> ProxyIdentity:
    """Authenticate the bearer token for this cluster and check the caller may reach it."""
    principal = authenticate(
        session, authorization, kubeconfig_cluster_id=cluster_id if is_uuid(cluster_id) else None
    )
    not_found = NotFound(f"cluster {cluster_id[:80]!r} not found")
    if not is_uuid(cluster_id):
        raise not_found
    row = session.execute(
        select(Cluster.id, Cluster.name, Cluster.project_id, Project.name)
        .join(Project, Project.id == Cluster.project_id)
        .where(Cluster.id == cluster_id, Cluster.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        raise not_found
    _id, cluster_name, project_id, project_name = row
    role = project_role(session, principal, project_id)
    if role is None and not principal.is_admin:
        raise not_found
    return ProxyIdentity(
        user=principal.user.name,
        groups=groups_for(role),
        token_id=principal.token.id,
        token_kind=principal.token.kind,
        cluster_id=cluster_id,
        cluster_name=cluster_name,
        project=project_name,
    )
