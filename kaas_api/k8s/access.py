"""Who may reach a user cluster through the API's k8s proxy: ``kaas_core.cluster_access``, with its refusals
as the API's own errors.

Owned by ``kaas_api.k8s``; called by ``kaas_api.k8s.proxy``. The rules (and ``ProxyIdentity``) live in
``kaas_core.cluster_access``, shared with the tunnel server's k8s proxy; the remembered answers in
``kaas_core.credential_cache``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from kaas_api.errors import KaasError, NotFound, Unauthenticated
from kaas_core import cluster_access
from kaas_core.cluster_access import (
    AUTHENTICATED_GROUP,
    GROUP_PREFIX,
    AccessRefused,
    ProxyIdentity,
    groups_for,
    last_use_due,
)
from kaas_core.db.models import ApiToken, utcnow

__all__ = [
    "AUTHENTICATED_GROUP",
    "GROUP_PREFIX",
    "ProxyIdentity",
    "as_kaas_error",
    "authorize_cluster",
    "groups_for",
    "record_last_use",
]


def as_kaas_error(exc: AccessRefused) -> KaasError:
    """The API's error for a refusal of ``kaas_core.cluster_access``."""
    if exc.status_code == NotFound.status_code:
        return NotFound(exc.message)
    return Unauthenticated(exc.message)


def record_last_use(session: Session, identity: ProxyIdentity) -> None:
    """Write the token's ``last_used_at`` when due (at most once a minute), in the check's own session."""
    now = utcnow()
    if last_use_due(identity.last_used_at, now=now):
        token = session.get(ApiToken, identity.token_id)
        if token is not None:
            token.last_used_at = now


def authorize_cluster(
    session: Session, authorization: str | None, cluster_id: str, *, now: datetime | None = None
) -> ProxyIdentity:
    """``kaas_core.cluster_access.authorize_cluster`` with the API's errors, recording the token's use."""
    try:
        identity = cluster_access.authorize_cluster(session, authorization, cluster_id, now=now)
    except AccessRefused as exc:
        raise as_kaas_error(exc) from exc
    record_last_use(session, identity)
    return identity
