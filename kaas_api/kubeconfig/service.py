"""Kubeconfig tokens and kubeconfig documents.

Owned by ``kaas_api.kubeconfig``; called by its endpoints (and by tests). A kubeconfig token is an
``api_tokens`` row of kind ``kubeconfig`` bound to one user and one cluster: it authenticates only on that
cluster's k8s proxy (``kaas_api.k8s.access.authorize_cluster``), never on
``/v1``. Only its digest is stored. Raises domain errors only.

A cluster's kubeconfig tokens die with it: ``kaas_api.clusters.service.delete_cluster`` revokes them in the
transaction that accepts the deletion, and no new one is issued once that is accepted. Not when the
teardown finishes: a deletion cannot be undone, a teardown the cloud stalls may take days, and the owner
can still reach the cluster meanwhile with their own API token (``--exec`` kubeconfigs).

kubectl sends a kubeconfig's credentials (token or exec plugin alike) only to an ``https://`` server
(kubernetes/kubectl#744), so a kubeconfig for a plain ``http://`` public URL says so in a comment: serve the
API over TLS (``KAAS_TLS_CERT_FILE`` / ``KAAS_TLS_KEY_FILE``, and ``KAAS_TLS_CA_FILE`` for a private CA).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import yaml
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kaas_api.auth.service import TOKEN_DISPLAY_PREFIX_LENGTH, Principal
from kaas_api.errors import Conflict, Forbidden, InvalidInput, NotFound
from kaas_api.validation import is_dns_label, is_uuid
from kaas_core.credential_cache import Revocation, note_revocation
from kaas_core.db.models import ApiToken, Cluster, ClusterPhase, Project, TokenKind, User, utcnow
from kaas_core.security import generate_token, hash_token

KUBECONFIG_TOKEN_PREFIX = "kaaskc_"  # noqa: S105 (a prefix, not a secret)
EXEC_API_VERSION = "client.authentication.k8s.io/v1"


def issue_kubeconfig_token(
    session: Session, *, user: User, cluster: Cluster, ttl: timedelta, description: str = ""
) -> tuple[ApiToken, str]:
    """A new token for ``user`` on ``cluster`` only; returns the row and the token (never stored).

    ``Conflict`` once the cluster's deletion is accepted. The cluster row is share-locked for the check, so
    a deletion accepted concurrently either waits for this token (and revokes it) or is seen here.
    """
    phase = session.scalar(select(Cluster.phase).where(Cluster.id == cluster.id).with_for_update(read=True))
    if phase in (ClusterPhase.DELETING.value, ClusterPhase.DELETED.value):
        raise Conflict(f"cluster {cluster.name!r} is being deleted: it gets no new kubeconfig tokens")
    token = generate_token(KUBECONFIG_TOKEN_PREFIX)
    row = ApiToken(
        user_id=user.id,
        token_hash=hash_token(token),
        prefix=token[:TOKEN_DISPLAY_PREFIX_LENGTH],
        kind=TokenKind.KUBECONFIG.value,
        cluster_id=cluster.id,
        description=description or f"kubeconfig of cluster {cluster.name}",
        expires_at=utcnow() + ttl,
    )
    session.add(row)
    session.flush()
    return row, token


def revoke_cluster_kubeconfig_tokens(session: Session, cluster: Cluster) -> None:
    """Revoke every kubeconfig token of ``cluster`` that is not revoked yet (its deletion was accepted)."""
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.kind == TokenKind.KUBECONFIG.value,
            ApiToken.cluster_id == cluster.id,
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    # a bulk UPDATE the ORM does not see: the k8s proxies' caches must still forget these tokens
    note_revocation(session, Revocation("cluster", cluster.id))


def check_ttl_days(ttl_days: int, *, max_days: int) -> timedelta:
    if not 1 <= ttl_days <= max_days:
        raise InvalidInput(
            f"ttl_days must be between 1 and {max_days}", field="ttl_days", rule="out_of_range"
        )
    return timedelta(days=ttl_days)


def context_name(project: str, cluster: str) -> str:
    return f"kaas-{project}-{cluster}"


def proxy_url(public_url: str, cluster_id: str) -> str:
    return f"{public_url.rstrip('/')}/k8s/clusters/{cluster_id}"


def exec_credential(token: str) -> dict[str, Any]:
    """What ``kaas token --cluster ID`` prints: an ExecCredential carrying the CLI's API token."""
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential", "status": {"token": token}}


def render_kubeconfig(
    *,
    public_url: str,
    project: str,
    cluster_name: str,
    cluster_id: str,
    user_name: str,
    token: str | None,
    ca_pem: bytes | None = None,
    exec_command: str = "kaas",
) -> str:
    """The kubeconfig YAML: a bearer ``token``, or (``token=None``) an exec plugin calling ``kaas token``."""
    name = context_name(project, cluster_name)
    server = proxy_url(public_url, cluster_id)
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user: dict[str, Any]
    if token is not None:
        user = {"token": token}
    else:
        user = {
            "exec": {
                "apiVersion": EXEC_API_VERSION,
                "command": exec_command,
                "args": ["token", "--cluster", cluster_id],
                "interactiveMode": "Never",
                "provideClusterInfo": False,
            }
        }
    user_entry = f"{name}-{user_name}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user_entry, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user_entry}}],
        "current-context": name,
        "preferences": {},
    }
    header = f"# kaas cluster {cluster_name} of project {project} (id {cluster_id})\n"
    if not server.startswith("https://"):
        header += (
            "# WARNING: kubectl sends credentials only over HTTPS (kubernetes/kubectl#744); this server is\n"
            "# plain HTTP, so kubectl will not authenticate. Serve the kaas API over TLS.\n"
        )
    return header + yaml.safe_dump(document, sort_keys=False)


@dataclass(frozen=True)
class KubeconfigTokenView:
    token: ApiToken
    user: str
    project: str
    cluster: str


def list_kubeconfig_tokens(
    session: Session, principal: Principal, *, user_name: str | None = None
) -> list[KubeconfigTokenView]:
    """The caller's kubeconfig tokens; an admin sees everyone's, or one user's with ``user_name``."""
    query = (
        select(ApiToken, User.name, Project.name, Cluster.name)
        .join(User, User.id == ApiToken.user_id)
        .join(Cluster, Cluster.id == ApiToken.cluster_id)
        .join(Project, Project.id == Cluster.project_id)
        .where(ApiToken.kind == TokenKind.KUBECONFIG.value)
        .order_by(ApiToken.created_at)
    )
    if user_name is not None and user_name != principal.user.name:
        if not principal.is_admin:
            raise Forbidden("only admins may list another user's kubeconfig tokens")
        if (
            not is_dns_label(user_name)
            or session.scalar(select(User.id).where(User.name == user_name)) is None
        ):
            raise NotFound(f"user {user_name[:80]!r} not found")
        query = query.where(User.name == user_name)
    elif user_name is not None or not principal.is_admin:
        query = query.where(ApiToken.user_id == principal.user.id)
    return [
        KubeconfigTokenView(token=token, user=user, project=project, cluster=cluster)
        for token, user, project, cluster in session.execute(query).all()
    ]


def revoke_kubeconfig_token(session: Session, principal: Principal, token_id: str) -> ApiToken:
    """Revoke one of the caller's kubeconfig tokens (any for an admin); others' answer 404. Idempotent."""
    row = session.get(ApiToken, token_id) if is_uuid(token_id) else None
    if (
        row is None
        or row.kind != TokenKind.KUBECONFIG.value
        or (row.user_id != principal.user.id and not principal.is_admin)
    ):
        raise NotFound(f"kubeconfig token {token_id[:80]!r} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return row
