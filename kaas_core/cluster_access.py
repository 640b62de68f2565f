"""Who may reach a user cluster through the k8s proxy, and as whom the agent impersonates them.

Owned by ``kaas_core`` because both k8s proxies use it: the tunnel server's (``kaas_tunnel.k8s_proxy``, the
one-hop path) and the API's (``kaas_api.k8s``, which translates ``AccessRefused`` into its own errors);
both reach it through ``kaas_core.credential_cache``. ``kaas_api.auth.service`` uses the token rules
(``bearer_token_hash``, ``token_refusal``, ``accepted_token_kinds``) for every other route.

A user API token of a project member, or a kubeconfig token of exactly this cluster, authenticates; any
project role (viewer and up) reaches the cluster, and the user cluster's own RBAC decides what each role may
do through the groups we send. A cluster the caller cannot see, an unknown or deleted one: all 404.
Nothing here writes: ``last_used_at`` is the caller's (``kaas_core.credential_cache.LastUsedRecorder``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import Session

from kaas_core.db.models import (
    ApiToken,
    Cluster,
    Project,
    ProjectMember,
    Role,
    TokenKind,
    User,
    as_utc,
    utcnow,
)
from kaas_core.security import hash_token

AUTHENTICATED_GROUP = "kaas:authenticated"
GROUP_PREFIX = "kaas:"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # how exactly api_tokens.last_used_at follows use
MAX_AUTHORIZATION_LENGTH = 512


class AccessRefused(Exception):
    """A k8s proxy request refused by authentication or authorization; ``status_code`` says which."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCredentials(AccessRefused):
    """No token, a malformed header, or a token that is unknown, revoked, expired or of a disabled user."""

    status_code = 401


class ClusterNotVisible(AccessRefused):
    """No such live cluster, or one the caller is not a member of (the same answer, on purpose)."""

    status_code = 404


@dataclass(frozen=True)
class ProxyIdentity:
    """The caller as the cluster sees them; ``user`` is the kaas user name (the tunnel adds ``kaas:``).

    ``token_hash``, ``user_id`` and ``project_id`` say which revocations concern this identity
    (``kaas_core.credential_cache``); ``token_expires_at`` bounds how long it may be cached.
    """

    user: str
    groups: tuple[str, ...]
    token_id: str
    token_kind: str
    cluster_id: str
    cluster_name: str
    project: str
    user_id: str = ""
    project_id: str = ""
    token_hash: str = ""
    token_expires_at: datetime | None = None
    last_used_at: datetime | None = None


def groups_for(role: Role | None) -> tuple[str, ...]:
    """The impersonated groups of a project role; a global admin who is not a member acts as an owner."""
    effective = role or Role.OWNER
    return (AUTHENTICATED_GROUP, GROUP_PREFIX + effective.value)


def bearer_token_hash(authorization: str | None) -> str:
    """The stored hash of the token in an ``Authorization: Bearer <token>`` header; ``InvalidCredentials``
    when there is none or the header is malformed."""
    if not authorization:
        raise InvalidCredentials("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(authorization) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidCredentials("malformed Authorization header: send 'Authorization: Bearer <token>'")
    return hash_token(token)


def token_refusal(api_token: ApiToken, user: User, *, now: datetime) -> str | None:
    """Why a token row found by its hash does not authenticate (revoked, expired, its user disabled), or
    None when it does. The one rule, for the API's routes and both k8s proxies."""
    if api_token.revoked_at is not None:
        return "token was revoked"
    expires_at = as_utc(api_token.expires_at)
    if expires_at is not None and expires_at <= now:
        return "token expired: create a new one"
    if user.disabled_at is not None:
        return "user is disabled"
    return None


def last_use_due(last_used_at: datetime | None, *, now: datetime) -> bool:
    """Whether ``last_used_at`` should be written now: at most once a minute per token, since kubectl's
    every request would otherwise be a write."""
    last_used = as_utc(last_used_at)
    return last_used is None or now - last_used >= LAST_USED_RESOLUTION


def accepted_token_kinds(kubeconfig_cluster_id: str | None) -> ColumnElement[bool]:
    """User API tokens; with a cluster id, also the kubeconfig tokens of exactly that cluster."""
    user_token = ApiToken.kind == TokenKind.USER.value
    if kubeconfig_cluster_id is None:
        return user_token
    return or_(
        user_token,
        and_(ApiToken.kind == TokenKind.KUBECONFIG.value, ApiToken.cluster_id == kubeconfig_cluster_id),
    )


def _is_uuid(value: str) -> bool:
    if len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def authorize_cluster(
    session: Session, authorization: str | None, cluster_id: str, *, now: datetime | None = None
) -> ProxyIdentity:
    """Authenticate the bearer token for this cluster and check the caller may reach it.

    One round trip: the token, its user, the cluster, its project and the caller's membership come in one
    query (outer joins, so a missing cluster or membership is a NULL, not a missing row). Errors keep their
    order: a bad token is 401 before anything is said about the cluster.
    """
    token_hash = bearer_token_hash(authorization)
    known_form = _is_uuid(cluster_id)
    on_cluster = and_(Cluster.id == cluster_id, Cluster.deleted_at.is_(None)) if known_form else false()
    row = session.execute(
        select(ApiToken, User, Cluster.name, Project.id, Project.name, ProjectMember.role)
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
        raise InvalidCredentials("invalid token")
    api_token, user, cluster_name, project_id, project_name, member_role = row
    refusal = token_refusal(api_token, user, now=now or utcnow())
    if refusal is not None:
        raise InvalidCredentials(refusal)
    not_found = ClusterNotVisible(f"cluster {cluster_id[:80]!r} not found")
    if cluster_name is None or project_name is None:
        raise not_found
    role = Role(member_role) if member_role is not None else None
    if role is None and not user.is_admin:
        raise not_found
    return ProxyIdentity(
        user=user.name,
        groups=groups_for(role),
        token_id=api_token.id,
        token_kind=api_token.kind,
        cluster_id=cluster_id,
        cluster_name=cluster_name,
        project=project_name,
        user_id=user.id,
        project_id=project_id,
        token_hash=token_hash,
        token_expires_at=as_utc(api_token.expires_at),
        last_used_at=as_utc(api_token.last_used_at),
    )
