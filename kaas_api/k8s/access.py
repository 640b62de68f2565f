"""Who may reach a user cluster through the k8s proxy, and as whom the agent impersonates them.

Owned by ``kaas_api.k8s``; called by ``kaas_api.k8s.proxy`` (in a worker thread: it uses the sync session).
A user API token of a project member, or a kubeconfig token of exactly this cluster, authenticates; any
project role (viewer and up) reaches the cluster, and the user cluster's own RBAC decides what each role may
do through the groups we send. A cluster the caller cannot see, an unknown or deleted one: all 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, false, select
from sqlalchemy.orm import Session

from kaas_api.auth.service import accepted_token_kinds, bearer_token_hash, check_token
from kaas_api.errors import NotFound, Unauthenticated
from kaas_api.validation import is_uuid
from kaas_core.db.models import ApiToken, Cluster, Project, ProjectMember, Role, User, utcnow

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


def authorize_cluster(
    session: Session, authorization: str | None, cluster_id: str, *, now: datetime | None = None
) -> ProxyIdentity:
    """Authenticate the bearer token for this cluster and check the caller may reach it.

    One round trip: the token, its user, the cluster, its project and the caller's membership come in one
    query (outer joins, so a missing cluster or membership is a NULL, not a missing row). kubectl sends a
    request for every line it prints; the proxy's own cost is mostly database round trips.
    Errors keep their order: a bad token is 401 before anything is said about the cluster.
    """
    token_hash = bearer_token_hash(authorization)
    known_form = is_uuid(cluster_id)
    on_cluster = and_(Cluster.id == cluster_id, Cluster.deleted_at.is_(None)) if known_form else false()
    row = session.execute(
        select(ApiToken, User, Cluster.name, Project.name, ProjectMember.role)
        .join(User, User.id == ApiToken.user_id)
        .outerjoin(Cluster, on_cluster)
        .outerjoin(Project, Project.id == Cluster.project_id)
        .outerjoin(
            ProjectMember,
            and_(ProjectMember.project_id == Cluster.project_id, ProjectMember.user_id == User.id),
        )
        .where(
            ApiToken.token_hash == token_hash,
            accepted_token_kinds(cluster_id if known_form else None),
        )
    ).one_or_none()
    if row is None:
        raise Unauthenticated("invalid token")
    api_token, user, cluster_name, project_name, member_role = row
    principal = check_token(api_token, user, now=now or utcnow())
    not_found = NotFound(f"cluster {cluster_id[:80]!r} not found")
    if cluster_name is None or project_name is None:
        raise not_found
    role = Role(member_role) if member_role is not None else None
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
