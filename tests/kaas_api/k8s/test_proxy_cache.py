"""The API's k8s proxy remembers who may reach a cluster (``kaas_core.credential_cache``) and forgets it at
the commit that revokes it: a revoked token, a removed membership, a deleted cluster answer at once.

No agent is connected, so an authorized request answers 503 and a refused one 401 or 404: the status says
which side of the check a request fell on.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.auth.service import Principal
from kaas_api.k8s.proxy import K8sProxyContext
from kaas_api.kubeconfig.service import issue_kubeconfig_token, revoke_kubeconfig_token
from kaas_api.projects.service import remove_member
from kaas_core.db.models import ApiToken, Cluster, Project, User, utcnow
from tests.kaas_api.conftest import World, bearer


def k8s(cluster_id: str) -> str:
    return f"/k8s/clusters/{cluster_id}/api/v1/namespaces"


def credentials(world: World) -> K8sProxyContext:
    context: K8sProxyContext = world.client.app.state.kaas_k8s  # type: ignore[attr-defined]
    return context


def test_a_second_request_is_answered_from_the_cache(world: World) -> None:
    cache = credentials(world).credentials
    for _ in range(2):
        assert world.client.get(k8s(world.cluster_id), headers=world.auth("member")).status_code == 503
    assert (cache.misses, cache.hits) == (1, 1)


def test_a_kubeconfig_token_revoked_after_use_is_refused_at_once(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        user = session.get(User, world.user_ids["viewer"])
        cluster = session.get(Cluster, world.cluster_id)
        assert user is not None
        assert cluster is not None
        row, token = issue_kubeconfig_token(session, user=user, cluster=cluster, ttl=timedelta(days=1))
        session.commit()
        token_id = row.id
    for _ in range(2):  # the second from the cache
        assert world.client.get(k8s(world.cluster_id), headers=bearer(token)).status_code == 503
    with session_factory() as session:
        user = session.get(User, world.user_ids["viewer"])
        token_row = session.get(ApiToken, token_id)
        assert user is not None
        assert token_row is not None
        revoke_kubeconfig_token(session, Principal.of(user, token_row), token_id)
        session.commit()
    refused = world.client.get(k8s(world.cluster_id), headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["message"] == "token was revoked"


def test_a_removed_member_and_a_deleted_cluster_are_refused_at_once(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    for _ in range(2):
        assert world.client.get(k8s(world.cluster_id), headers=world.auth("member")).status_code == 503
        assert world.client.get(k8s(world.cluster_id), headers=world.auth("viewer")).status_code == 503
    with session_factory() as session:
        remove_member(
            session, session.scalars(select(Project).where(Project.name == "alpha")).one(), "member"
        )
        session.commit()
    assert world.client.get(k8s(world.cluster_id), headers=world.auth("member")).status_code == 404
    assert world.client.get(k8s(world.cluster_id), headers=world.auth("viewer")).status_code == 503
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        cluster.deleted_at = utcnow()
        session.commit()
    assert world.client.get(k8s(world.cluster_id), headers=world.auth("viewer")).status_code == 404
