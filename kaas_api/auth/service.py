"""Who is calling, and what they may do: bearer-token authentication, API tokens, project roles.

Called by ``kaas_api.deps`` (authentication on every request), by the endpoints of every domain
(``authorize_project``) and by the CLI through ``kaas_api.users.service``. Raises domain errors only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaas_api.errors import Forbidden, NotFound, Unauthenticated
from kaas_api.validation import is_dns_label, is_uuid
from kaas_core import cluster_access
from kaas_core.db.models import ApiToken, Project, ProjectMember, Role, TokenKind, User, as_utc, utcnow
from kaas_core.security import USER_TOKEN_PREFIX, generate_token, hash_token

TOKEN_DISPLAY_PREFIX_LENGTH = 12
LAST_USED_RESOLUTION = cluster_access.LAST_USED_RESOLUTION


@dataclass(frozen=True)
class Actor:
    """The calling user as authentication found them: plain values, so that a ``Principal`` outlives the
    session it was read in (``kaas_api.auth.principal_cache`` keeps it a few seconds)."""

    id: str
    name: str
    is_admin: bool


@dataclass(frozen=True)
class TokenUse:
    """The token a caller authenticated with: which, until when, and when its use was last written."""

    id: str
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """Who is calling. A snapshot, not rows: a route that needs the user's row (to own something it
    creates) asks for it with ``user_row``."""

    user: Actor
    token: TokenUse

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    # ``Revocation.concerns`` (kaas_core.credential_cache) asks these of whatever a cache keeps
    @property
    def token_id(self) -> str:
        return self.token.id

    @property
    def user_id(self) -> str:
        return self.user.id

    project_id = ""  # a principal is no project's or cluster's: such revocations do not concern it
    cluster_id = ""

    @classmethod
    def of(cls, user: User, token: ApiToken) -> Principal:
        return cls(
            user=Actor(id=user.id, name=user.name, is_admin=user.is_admin),
            token=TokenUse(
                id=token.id, expires_at=as_utc(token.expires_at), last_used_at=as_utc(token.last_used_at)
            ),
        )

    def user_row(self, session: Session) -> User:
        """The caller's row in ``session`` (from its identity map when authentication read it there);
        ``Unauthenticated`` when the user was deleted since."""
        row = session.get(User, self.user.id)
        if row is None:
            raise Unauthenticated("user no longer exists")
        return row


def authenticate(
    session: Session,
    authorization: str | None,
    *,
    now: datetime | None = None,
) -> Principal:
    """Resolve an ``Authorization: Bearer <token>`` header to its user, or raise ``Unauthenticated``.

    Only user API tokens: a kubeconfig token is "invalid" here; it authenticates only on the k8s proxy of its
    own cluster (``kaas_api.k8s.access``, with ``accepted_token_kinds(cluster_id)``). Agent tokens are not
    ``api_tokens`` rows at all, so they never authenticate here.
    """
    return authenticate_hash(session, bearer_token_hash(authorization), now=now)


def authenticate_hash(session: Session, token_hash: str, *, now: datetime | None = None) -> Principal:
    """``authenticate`` once the header is checked and hashed (``kaas_api.deps`` hashes it first, to ask
    ``kaas_api.auth.principal_cache`` before the database)."""
    row = session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash, accepted_token_kinds(None))
    ).one_or_none()
    if row is None:
        raise Unauthenticated("invalid token")
    api_token, user = row
    return check_token(api_token, user, now=now or utcnow())


def bearer_token_hash(authorization: str | None) -> str:
    """The stored hash of the token in an ``Authorization: Bearer <token>`` header; ``Unauthenticated``
    when there is none or the header is malformed (the rule is ``kaas_core.cluster_access``'s)."""
    try:
        return cluster_access.bearer_token_hash(authorization)
    except cluster_access.InvalidCredentials as exc:
        raise Unauthenticated(exc.message) from exc


def check_token(api_token: ApiToken, user: User, *, now: datetime) -> Principal:
    """The principal of a token row found by its hash, unless it is revoked, expired or its user disabled
    (``kaas_core.cluster_access.token_refusal``, the rule both k8s proxies apply too).

    Separate from the look-up so that a caller may fetch the token in a larger query of its own.
    """
    refusal = cluster_access.token_refusal(api_token, user, now=now)
    if refusal is not None:
        raise Unauthenticated(refusal)
    if cluster_access.last_use_due(api_token.last_used_at, now=now):
        # at most one write a minute per token: kubectl's every request would otherwise be a commit
        api_token.last_used_at = now
    return Principal.of(user, api_token)


accepted_token_kinds = cluster_access.accepted_token_kinds


def issue_token(
    session: Session, user: User, *, description: str = "", ttl: timedelta | None = None
) -> tuple[ApiToken, str]:
    """Create a user API token; returns the row and the token itself, which is never stored."""
    token = generate_token(USER_TOKEN_PREFIX)
    row = ApiToken(
        user_id=user.id,
        token_hash=hash_token(token),
        prefix=token[:TOKEN_DISPLAY_PREFIX_LENGTH],
        kind=TokenKind.USER.value,
        description=description,
        expires_at=utcnow() + ttl if ttl is not None else None,
    )
    session.add(row)
    session.flush()
    return row, token


def list_tokens(session: Session, principal: Principal, *, user_name: str | None = None) -> list[ApiToken]:
    """The caller's tokens; an admin may name another user."""
    target_id = principal.user.id
    if user_name is not None and user_name != principal.user.name:
        if not principal.is_admin:
            raise Forbidden("only admins may list another user's tokens")
        found = (
            session.scalar(select(User).where(User.name == user_name)) if is_dns_label(user_name) else None
        )
        if found is None:
            raise NotFound(f"user {user_name[:80]!r} not found")
        target_id = found.id
    return list(
        session.scalars(select(ApiToken).where(ApiToken.user_id == target_id).order_by(ApiToken.created_at))
    )


def revoke_token(session: Session, principal: Principal, token_id: str) -> ApiToken:
    """Revoke one of the caller's tokens (any token for an admin); others' tokens answer 404."""
    row = session.get(ApiToken, token_id) if is_uuid(token_id) else None
    if row is None or (row.user_id != principal.user.id and not principal.is_admin):
        raise NotFound(f"token {token_id[:80]!r} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return row


@dataclass(frozen=True)
class ProjectAccess:
    project: Project
    role: Role | None  # None: a global admin who is not a member


def authorize_project(
    session: Session, principal: Principal, project_name: str, *, need: Role
) -> ProjectAccess:
    """Find a project the caller may see (by name, or by id as the API's answers give it) and check their
    role.

    A project the caller is not a member of answers 404, exactly like one that does not exist; a member
    whose role is too weak gets 403. Admins may do everything.
    """
    if not is_dns_label(project_name):
        raise project_not_found(project_name)
    project = session.get(Project, project_name) if is_uuid(project_name) else None
    if project is None:
        project = session.scalar(select(Project).where(Project.name == project_name))
    if project is None:
        raise project_not_found(project_name)
    member = session.get(ProjectMember, (project.id, principal.user.id))
    return check_project_role(
        principal, project, member.role if member is not None else None, need=need, project_name=project_name
    )


def project_not_found(project_name: str) -> NotFound:
    return NotFound(f"project {project_name[:80]!r} not found")


def check_project_role(
    principal: Principal, project: Project, member_role: str | None, *, need: Role, project_name: str
) -> ProjectAccess:
    """``authorize_project``'s decision once the project and the caller's membership are known: separate
    from the look-ups so that a caller may fetch them in a larger query of its own (the cluster GET fetches
    project, membership and cluster in one round trip, ``kaas_api.clusters.service.find_cluster``)."""
    role = Role(member_role) if member_role is not None else None
    if principal.is_admin:
        return ProjectAccess(project=project, role=role)
    if role is None:
        raise project_not_found(project_name)
    if role.rank < need.rank:
        raise Forbidden(
            f"your role in project {project.name!r} is {role.value}; this needs {need.value} or higher"
        )
    return ProjectAccess(project=project, role=role)


def project_role(session: Session, principal: Principal, project_id: str) -> Role | None:
    member = session.get(ProjectMember, (project_id, principal.user.id))
    return Role(member.role) if member is not None else None
