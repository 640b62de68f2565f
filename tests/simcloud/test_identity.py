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
