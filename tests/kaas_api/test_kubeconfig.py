"""Kubeconfig downloads and the kubeconfig tokens they carry."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import yaml

from kaas_api.db.models import utcnow
from kaas_api.kubeconfig.service import render_kubeconfig
from tests.kaas_api.conftest import World, bearer

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
