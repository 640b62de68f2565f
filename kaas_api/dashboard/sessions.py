"""Dashboard logins: an admin's API token is exchanged once for a session cookie.

The cookie carries 32 random bytes; only their SHA-256 is stored (``admin_sessions``), with the per-session
CSRF token every form must echo. A session lives at most ``ttl`` and ends earlier on logout, when the token
it was opened with is revoked or expires, or when the user stops being an admin. Called by
``kaas_api.dashboard.routes``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaas_api.auth.service import Principal, authenticate
from kaas_api.errors import Forbidden
from kaas_core.db.models import AdminSession, ApiToken, User, as_utc, utcnow
from kaas_core.security import hash_token

SESSION_COOKIE = "kaas_admin_session"
LOGIN_CSRF_COOKIE = "kaas_login_csrf"
_MAX_COOKIE_LENGTH = 128


@dataclass(frozen=True)
class DashboardView:
    """What a page shows of the session: plain values, still readable after the unit of work closed."""

    name: str
    csrf_token: str


@dataclass(frozen=True)
class DashboardSession:
    row: AdminSession
    principal: Principal

    @property
    def csrf_token(self) -> str:
        return self.row.csrf_token

    @property
    def view(self) -> DashboardView:
        return DashboardView(name=self.principal.user.name, csrf_token=self.row.csrf_token)


def open_session(session: Session, token: str, *, ttl: timedelta) -> tuple[str, AdminSession]:
    """Check an admin's API token and open a session; returns the cookie value (shown only to the browser).

    ``authenticate`` raises ``Unauthenticated`` for a bad, expired or revoked token; a valid token of a
    user who is not a global admin is ``Forbidden``.
    """
    principal = authenticate(session, f"Bearer {token.strip()}")
    if not principal.is_admin:
        raise Forbidden("the dashboard is for global admins only")
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    row = AdminSession(
        id_hash=hash_token(cookie),
        user_id=principal.user.id,
        token_id=principal.token.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    session.flush()
    return cookie, row


def resolve_session(session: Session, cookie: str | None) -> DashboardSession | None:
    """The live session of a cookie, or None (no cookie, unknown, ended, expired, token gone, not admin)."""
    if not cookie or len(cookie) > _MAX_COOKIE_LENGTH:
        return None
    found = session.execute(
        select(AdminSession, ApiToken, User)
        .join(ApiToken, ApiToken.id == AdminSession.token_id)
        .join(User, User.id == AdminSession.user_id)
        .where(AdminSession.id_hash == hash_token(cookie))
    ).one_or_none()
    if found is None:
        return None
    row, token, user = found
    now = utcnow()
    expires_at = as_utc(row.expires_at)
    token_expires_at = as_utc(token.expires_at)
    if (
        row.revoked_at is not None
        or (expires_at is not None and expires_at <= now)
        or token.revoked_at is not None
        or (token_expires_at is not None and token_expires_at <= now)
        or not user.is_admin
        or user.disabled_at is not None
    ):
        return None
    return DashboardSession(row=row, principal=Principal.of(user, token))


def close_session(dashboard_session: DashboardSession) -> None:
    dashboard_session.row.revoked_at = utcnow()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
