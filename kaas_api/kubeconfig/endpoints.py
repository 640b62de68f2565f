"""HTTP endpoints: the kubeconfig download and ``/v1/kubeconfig-tokens`` (list, revoke)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response, status

from kaas_api.auth.service import authorize_project
from kaas_api.clusters.service import get_cluster
from kaas_api.deps import CurrentUser, Settings, Uow
from kaas_api.errors import NotFound
from kaas_api.kubeconfig import service
from kaas_api.kubeconfig.schemas import KubeconfigTokenOut
from kaas_api.openapi import errors
from kaas_core.db.models import Role

router = APIRouter(prefix="/v1", tags=["kubeconfig"])


@router.get(
    "/projects/{project}/clusters/{cluster}/kubeconfig",
    response_class=Response,
    responses={
        200: {"content": {"application/yaml": {}}, "description": "The kubeconfig (YAML)."},
        # a token is issued with each download, and none for a cluster whose deletion was accepted
        **errors(409),
    },
)
def get_kubeconfig(
    project: str,
    cluster: str,
    principal: CurrentUser,
    uow: Uow,
    settings: Settings,
    ttl_days: int | None = Query(
        default=None, ge=1, description="Days the new kubeconfig token lives; default from the server."
    ),
    format: Literal["token", "exec"] = Query(
        default="token",
        description="token: a new kubeconfig token inside; exec: calls `kaas token --cluster ID` instead.",
    ),
) -> Response:
    """A kubeconfig for the cluster, through the kaas k8s proxy. Each download creates a new token
    (kind ``kubeconfig``, only valid for you on this cluster); list and revoke them at
    ``/v1/kubeconfig-tokens``."""
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    found = get_cluster(uow.session, access.project, cluster)
    if found.deleted_at is not None:
        raise NotFound(f"cluster {cluster[:80]!r} not found in project {access.project.name!r}")
    token = None
    if format == "token":
        ttl = service.check_ttl_days(
            ttl_days if ttl_days is not None else settings.kubeconfig_token_ttl_days,
            max_days=settings.kubeconfig_token_max_ttl_days,
        )
        _row, token = service.issue_kubeconfig_token(
            uow.session, user=principal.user_row(uow.session), cluster=found, ttl=ttl
        )
    ca_pem = settings.tls_ca_file.read_bytes() if settings.tls_ca_file is not None else None
    document = service.render_kubeconfig(
        public_url=settings.public_url,
        project=access.project.name,
        cluster_name=found.name,
        cluster_id=found.id,
        user_name=principal.user.name,
        token=token,
        ca_pem=ca_pem,
    )
    filename = service.context_name(access.project.name, found.name) + ".kubeconfig"
    return Response(
        content=document,
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def token_out(view: service.KubeconfigTokenView) -> KubeconfigTokenOut:
    token = view.token
    return KubeconfigTokenOut(
        id=token.id,
        prefix=token.prefix,
        user=view.user,
        project=view.project,
        cluster=view.cluster,
        cluster_id=token.cluster_id or "",
        description=token.description,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )


@router.get("/kubeconfig-tokens", response_model=list[KubeconfigTokenOut], responses=errors(403, 404))
def list_kubeconfig_tokens(
    principal: CurrentUser,
    uow: Uow,
    user: str | None = Query(default=None, max_length=255, description="One user's tokens (admins only)."),
) -> list[KubeconfigTokenOut]:
    """Your kubeconfig tokens (admins: everyone's, or one user's)."""
    views = service.list_kubeconfig_tokens(uow.session, principal, user_name=user)
    return [token_out(view) for view in views]


@router.delete("/kubeconfig-tokens/{kubeconfig_token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_kubeconfig_token(kubeconfig_token_id: str, principal: CurrentUser, uow: Uow) -> None:
    """Revoke one of your kubeconfig tokens (admins: anyone's). Revoking twice is harmless."""
    service.revoke_kubeconfig_token(uow.session, principal, kubeconfig_token_id)
