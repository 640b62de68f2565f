"""Users: creating them (with their first token), issuing them tokens, listing them.

Called by ``kaas_api.users.endpoints`` and directly by the CLI (``kaas admin create-user`` opens a session,
calls ``create_user`` and commits).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kaas_api.auth import service as auth_service
from kaas_api.errors import Conflict, InvalidInput
from kaas_api.validation import check_dns_label
from kaas_core.db.models import User


def create_user(
    session: Session, *, name: str, is_admin: bool = False, token_ttl: timedelta | None = None
) -> tuple[User, str]:
    """Create a user and its first API token. Returns the user and the token (shown once, never stored).

    Flushes only; the caller commits.
    """
    try:
        check_dns_label(name)
    except ValueError as exc:
        raise InvalidInput(f"user name: {exc}", field="name") from None
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(name=name, is_admin=is_admin)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"user {name!r} already exists") from exc
    _row, token = auth_service.issue_token(session, user, description="first token", ttl=token_ttl)
    return user, token


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def issue_token(session: Session, *, user: User, description: str = "", ttl: timedelta | None = None) -> str:
    """A new API token for ``user`` (e.g. ``kaas up`` issuing the admin a fresh one). Returns the token,
    which is never stored; flushes only."""
    _row, token = auth_service.issue_token(session, user, description=description, ttl=ttl)
    return token
