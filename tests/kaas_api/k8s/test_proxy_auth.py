"""Who gets through the k8s proxy: tokens, scopes, membership. Failures are Kubernetes ``Status`` objects."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from kaas_api.auth.service import Principal
from kaas_api.kubeconfig.service import issue_kubeconfig_token, revoke_kubeconfig_token
from kaas_core.db.models import ApiToken, Cluster, User, utcnow
from kaas_core.security import SecretBox
from tests.kaas_api.conftest import SECRET_KEY, World, bearer, cluster_body


def kubeconfig_token(
    session_factory: sessionmaker[Session], world: World, who: str, cluster_id: str, *, ttl: timedelta
) -> tuple[str, str]:
    with session_factory() as session:
        user = session.get(User, world.user_ids[who])
        cluster = session.get(Cluster, cluster_id)
        assert user is not None
        assert cluster is not None
        row, token = issue_kubeconfig_token(session, user=user, cluster=cluster, ttl=ttl)
        session.commit()
        return row.id, token


def k8s(cluster_id: str) -> str:
    return f"/k8s/clusters/{cluster_id}/api/v1/namespaces"


def assert_status(response: object, code: int) -> None:
    assert getattr(response, "status_code") == code, getattr(response, "text")  # noqa: B009
    body = response.json()  # type: ignore[attr-defined]
    assert body["kind"] == "Status"
    assert body["code"] == code


def test_a_kubeconfig_token_passes_kaas_on_its_own_cluster(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    _id, token = kubeconfig_token(session_factory, world, "viewer", world.cluster_id, ttl=timedelta(days=1))
    assert_status(world.client.get(k8s(world.cluster_id), headers=bearer(token)), 503)  # no agent here


def test_revoked_and_expired_kubeconfig_tokens_answer_401_status(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    _expired_id, expired = kubeconfig_token(
        session_factory, world, "member", world.cluster_id, ttl=timedelta(seconds=-1)
    )
    revoked_id, revoked = kubeconfig_token(
        session_factory, world, "member", world.cluster_id, ttl=timedelta(days=1)
    )
    with session_factory() as session:
        user = session.get(User, world.user_ids["member"])
        assert user is not None
        token_row = session.get(ApiToken, revoked_id)
        assert token_row is not None
        revoke_kubeconfig_token(session, Principal.of(user, token_row), revoked_id)
        session.commit()
    for token, message in ((expired, "token expired"), (revoked, "token was revoked")):
        response = world.client.get(k8s(world.cluster_id), headers=bearer(token))
        assert_status(response, 401)
        assert message in response.json()["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_proxy_records_when_a_kubeconfig_token_was_last_used(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    token_id, token = kubeconfig_token(
        session_factory, world, "viewer", world.cluster_id, ttl=timedelta(days=1)
    )
    world.client.get(k8s(world.cluster_id), headers=bearer(token))
    with session_factory() as session:
        row = session.get(ApiToken, token_id)
        assert row is not None
        assert row.last_used_at is not None


def test_a_kubeconfig_token_of_another_cluster_is_refused(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    created = world.client.post(
        "/v1/projects/alpha/clusters", json=cluster_body("c2"), headers=world.auth("owner")
    )
    assert created.status_code == 202, created.text
    other_cluster = created.json()["cluster"]["id"]
    _id, token = kubeconfig_token(session_factory, world, "owner", world.cluster_id, ttl=timedelta(days=1))
    assert_status(world.client.get(k8s(other_cluster), headers=bearer(token)), 401)


def test_a_kubeconfig_token_is_refused_on_the_v1_api(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    _id, token = kubeconfig_token(session_factory, world, "admin", world.cluster_id, ttl=timedelta(days=1))
    for path in ("/v1/me", "/v1/projects/alpha/clusters/c1", "/v1/kubeconfig-tokens"):
        response = world.client.get(path, headers=bearer(token))
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthenticated"


def test_an_agent_token_is_refused_everywhere(world: World, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        assert cluster.agent_token_encrypted is not None
        agent_token = SecretBox(SECRET_KEY).decrypt(cluster.agent_token_encrypted)
    assert_status(world.client.get(k8s(world.cluster_id), headers=bearer(agent_token)), 401)
    assert world.client.get("/v1/me", headers=bearer(agent_token)).status_code == 401


def test_another_projects_user_and_unknown_clusters_answer_404(world: World) -> None:
    assert_status(world.client.get(k8s(world.cluster_id), headers=world.auth("outsider")), 404)
    assert_status(
        world.client.get(k8s("00000000-0000-0000-0000-000000000000"), headers=world.auth("admin")), 404
    )
    assert_status(world.client.get(k8s("not-a-uuid"), headers=world.auth("admin")), 404)


def test_a_bad_token_is_401_before_anything_is_said_about_the_cluster(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    for cluster_id in (world.cluster_id, "00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        for headers in ({}, bearer("kaas_u_not-a-real-token"), {"Authorization": "Basic eDp5"}):
            assert_status(world.client.get(k8s(cluster_id), headers=headers), 401)
    with session_factory() as session:
        user = session.get(User, world.user_ids["owner"])
        assert user is not None
        user.disabled_at = utcnow()
        session.commit()
    response = world.client.get(k8s(world.cluster_id), headers=world.auth("owner"))
    assert_status(response, 401)
    assert "disabled" in response.json()["message"]


def test_a_deleted_cluster_answers_404(world: World, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        cluster.deleted_at = utcnow()
        session.commit()
    assert_status(world.client.get(k8s(world.cluster_id), headers=world.auth("owner")), 404)
