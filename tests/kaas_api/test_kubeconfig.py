"""Kubeconfig downloads and the kubeconfig tokens they carry."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.clusters.service import delete_cluster, get_any_cluster
from kaas_api.dispatch import UnitOfWork
from kaas_api.errors import Conflict
from kaas_api.kubeconfig.service import issue_kubeconfig_token, render_kubeconfig
from kaas_core.db.models import User, utcnow
from tests.kaas_api.conftest import World, bearer, cluster_body

KUBECONFIG = "/v1/projects/alpha/clusters/c1/kubeconfig"


def download(world: World, who: str, **params: str | int) -> dict[str, object]:
    response = world.client.get(KUBECONFIG, params=params, headers=world.auth(who))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/yaml")
    document: dict[str, object] = yaml.safe_load(response.text)
    return document


def user_token(document: dict[str, object]) -> str:
    return str(document["users"][0]["user"]["token"])  # type: ignore[index]


def test_the_kubeconfig_points_at_the_k8s_proxy_with_a_named_context(world: World) -> None:
    document = download(world, "viewer")
    cluster = document["clusters"][0]  # type: ignore[index]
    assert cluster["cluster"]["server"] == f"http://127.0.0.1:8000/k8s/clusters/{world.cluster_id}"
    assert document["current-context"] == "kaas-alpha-c1"
    assert document["contexts"][0]["context"]["cluster"] == cluster["name"]  # type: ignore[index]
    assert user_token(document).startswith("kaaskc_")


def test_a_plain_http_kubeconfig_warns_that_kubectl_will_not_send_the_token(world: World) -> None:
    text = world.client.get(KUBECONFIG, headers=world.auth("viewer")).text
    assert "kubectl sends credentials only over HTTPS" in text


def test_the_new_token_is_a_kubeconfig_token_of_this_user_and_cluster(world: World) -> None:
    token = user_token(download(world, "member", ttl_days=7))
    listed = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("member")).json()
    assert len(listed) == 1
    assert listed[0]["cluster_id"] == world.cluster_id
    assert listed[0]["user"] == "member"
    assert token.startswith(listed[0]["prefix"])
    expires = datetime.fromisoformat(listed[0]["expires_at"])
    assert abs(expires - (utcnow() + timedelta(days=7))) < timedelta(minutes=5)
    # it reaches the cluster's proxy (503: no agent in this app), but never the /v1 API
    assert world.client.get(f"/k8s/clusters/{world.cluster_id}/api", headers=bearer(token)).status_code == 503
    assert world.client.get("/v1/me", headers=bearer(token)).status_code == 401


def test_the_default_ttl_comes_from_the_settings_and_a_too_long_one_is_refused(world: World) -> None:
    download(world, "viewer")
    listed = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("viewer")).json()
    expires = datetime.fromisoformat(listed[0]["expires_at"])
    assert abs(expires - (utcnow() + timedelta(days=30))) < timedelta(minutes=5)
    refused = world.client.get(KUBECONFIG, params={"ttl_days": 366}, headers=world.auth("viewer"))
    assert refused.status_code == 422
    assert "365" in refused.json()["message"]


def test_the_exec_form_calls_kaas_token_and_creates_no_token(world: World) -> None:
    document = download(world, "viewer", format="exec")
    user = document["users"][0]["user"]  # type: ignore[index]
    assert "token" not in user
    assert user["exec"]["command"] == "kaas"
    assert user["exec"]["args"] == ["token", "--cluster", world.cluster_id]
    assert user["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert world.client.get("/v1/kubeconfig-tokens", headers=world.auth("viewer")).json() == []


def test_an_https_kubeconfig_carries_the_ca_and_no_warning() -> None:
    text = render_kubeconfig(
        public_url="https://kaas.example.com/",
        project="alpha",
        cluster_name="c1",
        cluster_id="id-1",
        user_name="alice",
        token="kaaskc_x",
        ca_pem=b"-----BEGIN CERTIFICATE-----\n",
    )
    cluster = yaml.safe_load(text)["clusters"][0]["cluster"]
    assert cluster["server"] == "https://kaas.example.com/k8s/clusters/id-1"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"-----BEGIN CERTIFICATE-----\n"
    assert "WARNING" not in text


def test_users_list_their_own_tokens_and_admins_everyones(world: World) -> None:
    download(world, "viewer")
    download(world, "member")
    mine = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("viewer")).json()
    assert [t["user"] for t in mine] == ["viewer"]
    everyone = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("admin")).json()
    assert sorted(t["user"] for t in everyone) == ["member", "viewer"]
    one = world.client.get("/v1/kubeconfig-tokens", params={"user": "member"}, headers=world.auth("admin"))
    assert [t["user"] for t in one.json()] == ["member"]
    refused = world.client.get(
        "/v1/kubeconfig-tokens", params={"user": "member"}, headers=world.auth("viewer")
    )
    assert refused.status_code == 403


def test_a_revoked_kubeconfig_token_stops_working_and_others_cannot_revoke_it(world: World) -> None:
    token = user_token(download(world, "member"))
    token_id = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("member")).json()[0]["id"]
    proxy = f"/k8s/clusters/{world.cluster_id}/api"
    assert (
        world.client.delete(f"/v1/kubeconfig-tokens/{token_id}", headers=world.auth("viewer")).status_code
        == 404
    )
    assert world.client.get(proxy, headers=bearer(token)).status_code == 503
    assert (
        world.client.delete(f"/v1/kubeconfig-tokens/{token_id}", headers=world.auth("member")).status_code
        == 204
    )
    refused = world.client.get(proxy, headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["message"] == "token was revoked"


def test_a_user_token_is_not_a_kubeconfig_token(world: World) -> None:
    spare = world.spare_token_ids["member"]
    response = world.client.delete(f"/v1/kubeconfig-tokens/{spare}", headers=world.auth("member"))
    assert response.status_code == 404


@pytest.mark.parametrize("deleted_by", ["owner", "admin"])
def test_deleting_a_cluster_revokes_its_kubeconfig_tokens_with_the_acceptance(
    world: World, deleted_by: str
) -> None:
    """Revoked in the transaction that accepts the deletion, not when the teardown ends: the deletion
    cannot be undone, and a teardown the cloud stalls must not leave the tokens alive meanwhile."""
    owner_token = user_token(download(world, "owner"))
    viewer_token = user_token(download(world, "viewer"))
    created = world.call("owner", "POST", "/v1/projects/alpha/clusters", cluster_body("c2"))
    assert created.status_code == 202, created.text
    other = world.client.get("/v1/projects/alpha/clusters/c2/kubeconfig", headers=world.auth("viewer"))
    other_token = user_token(yaml.safe_load(other.text))
    proxy = f"/k8s/clusters/{world.cluster_id}/api"
    assert world.client.get(proxy, headers=bearer(owner_token)).status_code == 503  # accepted (no agent here)

    if deleted_by == "admin":
        deleted = world.call("admin", "DELETE", f"/v1/admin/clusters/{world.cluster_id}")
    else:
        deleted = world.call("owner", "DELETE", "/v1/projects/alpha/clusters/c1")
    assert deleted.status_code == 202, deleted.text

    for token in (owner_token, viewer_token):
        assert world.client.get(proxy, headers=bearer(token)).status_code == 401
    listed = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("viewer")).json()
    assert {t["cluster"]: t["revoked_at"] is not None for t in listed} == {"c1": True, "c2": False}
    c2 = f"/k8s/clusters/{created.json()['cluster']['id']}/api"
    assert world.client.get(c2, headers=bearer(other_token)).status_code == 503  # another cluster's: alive


def test_a_cluster_being_deleted_gets_no_new_kubeconfig_token(world: World) -> None:
    assert world.call("owner", "DELETE", "/v1/projects/alpha/clusters/c1").status_code == 202
    refused = world.client.get(KUBECONFIG, headers=world.auth("owner"))
    assert refused.status_code == 409
    assert "being deleted" in refused.json()["message"]
    assert world.client.get("/v1/kubeconfig-tokens", headers=world.auth("owner")).json() == []
    exec_form = world.client.get(KUBECONFIG, params={"format": "exec"}, headers=world.auth("owner"))
    assert exec_form.status_code == 200  # carries no token: the owner's own API token reaches the cluster


def _waiting_on_a_lock(session_factory: sessionmaker[Session]) -> bool:
    with session_factory() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
        )


def _until(condition: Callable[[], bool], *, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the other transaction never waited for the lock"
        time.sleep(0.02)


@pytest.mark.committing  # two transactions, one waiting for the other's row lock
@pytest.mark.parametrize("first", ["deletion", "download"])
def test_a_download_racing_the_deletion_leaves_no_live_token(
    world: World, session_factory: sessionmaker[Session], first: str
) -> None:
    """Whichever transaction takes the cluster row first, the other waits for it: a download after an
    accepted deletion is refused, a token issued before it is revoked by it."""

    def delete(session: Session) -> None:
        cluster = get_any_cluster(session, world.cluster_id)
        owner = session.scalars(select(User).where(User.name == "owner")).one()
        delete_cluster(UnitOfWork(session), cluster, requested_by=owner.id)

    def download(session: Session) -> None:
        cluster = get_any_cluster(session, world.cluster_id)
        viewer = session.scalars(select(User).where(User.name == "viewer")).one()
        issue_kubeconfig_token(session, user=viewer, cluster=cluster, ttl=timedelta(days=1))

    steps = {"deletion": delete, "download": download}
    second = "download" if first == "deletion" else "deletion"
    outcome: dict[str, BaseException | None] = {}

    def run_second() -> None:
        with session_factory() as session:
            try:
                steps[second](session)
                session.commit()
                outcome[second] = None
            except Exception as exc:  # the test asserts on it below
                outcome[second] = exc

    with session_factory() as session:
        steps[first](session)  # holds the cluster row until it commits
        thread = threading.Thread(target=run_second)
        thread.start()
        _until(lambda: _waiting_on_a_lock(session_factory))
        session.commit()
    thread.join(timeout=10)
    assert not thread.is_alive()

    listed = world.client.get("/v1/kubeconfig-tokens", headers=world.auth("viewer")).json()
    if first == "deletion":
        assert isinstance(outcome["download"], Conflict)
        assert listed == []
    else:
        assert outcome["deletion"] is None
        assert [t["revoked_at"] is not None for t in listed] == [True]
