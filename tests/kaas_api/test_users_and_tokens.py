"""Users and tokens: the first token, own tokens, expiry, revocation, last use, the CLI's service call."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.users.service import create_user
from kaas_core.db.models import ApiToken, User
from kaas_core.security import hash_token
from tests.kaas_api.conftest import World, bearer


def test_create_user_service_returns_a_working_token_stored_only_as_its_hash(
    session_factory: sessionmaker[Session], client: object, world: World
) -> None:
    with session_factory() as session:
        user, token = create_user(session, name="cli-user", is_admin=False)
        session.commit()
        stored = session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)).one()
    assert token.startswith("kaas_")
    assert stored.token_hash == hash_token(token)
    assert token not in (stored.token_hash, stored.prefix)
    me = world.client.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["name"] == "cli-user"


def test_admin_creates_a_user_and_sees_its_first_token_once(world: World) -> None:
    response = world.call("admin", "POST", "/v1/users", {"name": "dora"})
    assert response.status_code == 201
    token = response.json()["token"]
    assert world.client.get("/v1/me", headers=bearer(token)).json()["name"] == "dora"
    listed = world.call("admin", "GET", "/v1/tokens?user=dora").json()
    assert all("token" not in item for item in listed)


def test_duplicate_user_name_is_a_conflict(world: World) -> None:
    response = world.call("admin", "POST", "/v1/users", {"name": "member"})
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


def test_token_with_ttl_expires_and_can_be_revoked(world: World) -> None:
    created = world.call("member", "POST", "/v1/tokens", {"description": "laptop", "ttl_days": 2})
    assert created.status_code == 201
    body = created.json()
    assert body["info"]["expires_at"] is not None
    token = body["token"]
    assert world.client.get("/v1/me", headers=bearer(token)).status_code == 200
    assert world.call("member", "DELETE", f"/v1/tokens/{body['info']['id']}").status_code == 204
    response = world.client.get("/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]


def test_expired_token_is_refused_with_a_reason(world: World, session_factory: sessionmaker[Session]) -> None:
    from kaas_api.auth.service import issue_token

    with session_factory() as session:
        user = session.get(User, world.user_ids["viewer"])
        assert user is not None
        _row, token = issue_token(session, user, ttl=timedelta(seconds=-5))
        session.commit()
    response = world.client.get("/v1/me", headers=bearer(token))
    assert response.status_code == 401
    assert "expired" in response.json()["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_using_a_token_records_last_used_at(world: World, session_factory: sessionmaker[Session]) -> None:
    world.call("viewer", "GET", "/v1/me")
    with session_factory() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(world.tokens["viewer"]))
        ).one()
    assert row.last_used_at is not None


def test_users_cannot_see_or_revoke_each_others_tokens(world: World) -> None:
    assert world.call("member", "GET", "/v1/tokens?user=viewer").status_code == 403
    other = world.spare_token_ids["viewer"]
    assert world.call("member", "DELETE", f"/v1/tokens/{other}").status_code == 404
    assert world.call("admin", "DELETE", f"/v1/tokens/{other}").status_code == 204


def test_admin_lists_another_users_tokens(world: World) -> None:
    listed = world.call("admin", "GET", "/v1/tokens?user=viewer")
    assert listed.status_code == 200
    assert {t["id"] for t in listed.json()} >= {world.spare_token_ids["viewer"]}
    assert world.call("admin", "GET", "/v1/tokens?user=nobody").status_code == 404


def test_me_lists_memberships(world: World) -> None:
    me = world.call("viewer", "GET", "/v1/me").json()
    assert me["projects"] == [{"project": "alpha", "role": "viewer"}, {"project": "empty", "role": "viewer"}]


def test_issue_token_service_gives_an_existing_user_a_new_token(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    from kaas_api.users.service import issue_token

    with session_factory() as session:
        user = session.get(User, world.user_ids["member"])
        assert user is not None
        token = issue_token(session, user=user, description="kaas up")
        session.commit()
    assert world.client.get("/v1/me", headers=bearer(token)).json()["name"] == "member"
