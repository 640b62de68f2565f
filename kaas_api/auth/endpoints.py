"""HTTP endpoints of the caller's own identity: ``/v1/me`` and ``/v1/tokens``."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Query, status
from sqlalchemy import select

from kaas_api.auth import service
from kaas_api.auth.schemas import MembershipOut, MeOut, TokenCreate, TokenCreated, TokenOut
from kaas_api.deps import CurrentUser, Settings, Uow
from kaas_api.openapi import errors
from kaas_core.db.models import ApiToken, Project, ProjectMember

router = APIRouter(prefix="/v1", tags=["auth"])


def token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        prefix=token.prefix,
        kind=token.kind,
        description=token.description,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
        last_used_at=token.last_used_at,
    )


@router.get("/me", response_model=MeOut)
def me(principal: CurrentUser, uow: Uow) -> MeOut:
    """Who you are and your role in each project."""
    rows = uow.session.execute(
        select(Project.name, ProjectMember.role)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(ProjectMember.user_id == principal.user.id)
        .order_by(Project.name)
    ).all()
    user = principal.user_row(uow.session)
    return MeOut(
        id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        created_at=user.created_at,
        projects=[MembershipOut(project=name, role=role) for name, role in rows],
    )


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_token(body: TokenCreate, principal: CurrentUser, uow: Uow, settings: Settings) -> TokenCreated:
    """Create a token for yourself. The token is in the response only this once."""
    days = body.ttl_days if body.ttl_days is not None else settings.token_default_ttl_days
    row, token = service.issue_token(
        uow.session, principal.user_row(uow.session), description=body.description, ttl=timedelta(days=days)
    )
    return TokenCreated(token=token, info=token_out(row))


@router.get("/tokens", response_model=list[TokenOut], responses=errors(403, 404))
def list_tokens(
    principal: CurrentUser,
    uow: Uow,
    user: str | None = Query(default=None, max_length=255, description="Another user's name (admins only)."),
) -> list[TokenOut]:
    """Your tokens (never the tokens themselves, only their prefixes); admins may name another user."""
    return [token_out(t) for t in service.list_tokens(uow.session, principal, user_name=user)]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, principal: CurrentUser, uow: Uow) -> None:
    """Revoke one of your tokens (admins: anyone's). Revoking twice is harmless."""
    service.revoke_token(uow.session, principal, token_id)
