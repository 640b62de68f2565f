"""Keystone: password auth through openstacksdk, the catalog, version discovery, and token checks."""

from __future__ import annotations

import httpx
from openstack.connection import Connection

from simcloud.testing import SimCloudHandle


def test_password_auth_gives_a_project_scoped_token_and_a_catalog(
    conn: Connection, cloud: SimCloudHandle
) -> None:
    assert conn.current_project_id == cloud.sim.project_id("demo")
    for service in ("compute", "network", "image", "load-balancer", "identity"):
        endpoint = conn.session.get_endpoint(
            service_type=service, interface="public", region_name="RegionOne"
        )
        assert endpoint is not None
        assert endpoint.startswith(cloud.base_url)


def test_admin_cloud_is_scoped_to_the_admin_project(admin_conn: Connection, cloud: SimCloudHandle) -> None:
    assert admin_conn.current_project_id == cloud.sim.project_id("admin")


def test_token_endpoint_answers_201_with_subject_token(cloud: SimCloudHandle) -> None:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "demo", "domain": {"name": "Default"}, "password": "secret"}},
            },
            "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}},
        }
    }
    response = httpx.post(f"{cloud.base_url}/identity/v3/auth/tokens", json=body)
    assert response.status_code == 201
    assert response.headers["X-Subject-Token"]
    types = {entry["type"] for entry in response.json()["token"]["catalog"]}
    assert types == {"compute", "network", "image", "load-balancer", "identity"}


def test_wrong_password_is_refused(cloud: SimCloudHandle) -> None:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "demo", "domain": {"name": "Default"}, "password": "wrong"}},
            }
        }
    }
    assert httpx.post(f"{cloud.base_url}/identity/v3/auth/tokens", json=body).status_code == 401


def test_every_service_call_needs_a_valid_token(cloud: SimCloudHandle) -> None:
    for path in (
        "/compute/v2.1/servers",
        "/network/v2.0/networks",
        "/image/v2/images",
        "/load-balancer/v2/lbaas/loadbalancers",
    ):
        assert httpx.get(cloud.base_url + path).status_code == 401
        assert httpx.get(cloud.base_url + path, headers={"X-Auth-Token": "bogus"}).status_code == 401


def test_nova_answers_the_requested_microversion(cloud: SimCloudHandle, conn: Connection) -> None:
    token = conn.auth_token
    response = httpx.get(
        f"{cloud.base_url}/compute/v2.1/flavors",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.90"},
    )
    assert response.headers["OpenStack-API-Version"] == "compute 2.90"
    assert response.headers["X-OpenStack-Nova-API-Version"] == "2.90"
    too_new = httpx.get(
        f"{cloud.base_url}/compute/v2.1/flavors",
        headers={"X-Auth-Token": token, "OpenStack-API-Version": "compute 3.0"},
    )
    assert too_new.status_code == 406


def test_revoked_tokens_are_refused_and_a_new_login_is_accepted(
    cloud: SimCloudHandle, conn: Connection
) -> None:
    token = conn.auth_token
    assert cloud.sim.revoke_tokens() >= 1
    response = httpx.get(f"{cloud.base_url}/compute/v2.1/flavors", headers={"X-Auth-Token": token})
    assert response.status_code == 401
    assert "Keystone uri=" in response.headers["WWW-Authenticate"]
    assert [f.name for f in conn.compute.flavors()][:1] == ["m1.tiny"]  # keystoneauth logs in again


def test_injected_token_refusals_answer_401_to_valid_tokens_then_stop(
    cloud: SimCloudHandle, conn: Connection
) -> None:
    headers = {"X-Auth-Token": conn.auth_token}
    cloud.sim.refuse_next_tokens(2)
    url = f"{cloud.base_url}/network/v2.0/networks"
    token_check = httpx.get(
        f"{cloud.base_url}/identity/v3/auth/tokens", headers={**headers, "X-Subject-Token": conn.auth_token}
    )
    assert token_check.status_code == 200  # the identity service itself is not refused
    assert [httpx.get(url, headers=headers).status_code for _ in range(3)] == [401, 401, 200]


def test_a_changed_password_refuses_the_old_one_and_revokes_the_users_tokens(
    cloud: SimCloudHandle, conn: Connection, admin_conn: Connection
) -> None:
    demo_token, admin_token = conn.auth_token, admin_conn.auth_token
    logins = cloud.sim.login_attempts
    cloud.sim.set_password("demo", "rotated")
    assert cloud.sim.identify(demo_token) is None
    assert cloud.sim.identify(admin_token) is not None  # other users keep theirs
    assert cloud.sim.authenticate(username="demo", password="secret", project_name="demo") is None
    assert cloud.sim.authenticate(username="demo", password="rotated", project_name="demo") is not None
    assert cloud.sim.login_attempts == logins + 2
