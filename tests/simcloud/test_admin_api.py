"""The simulator's own admin API under /_sim/: admin token only; injection and inspection over HTTP."""

from __future__ import annotations

import base64

import httpx
from openstack.connection import Connection

from simcloud.testing import SimCloudHandle


def _boot(conn: Connection) -> str:
    net = conn.network.create_network(name="n")
    conn.network.create_subnet(network_id=net.id, cidr="10.40.0.0/24", ip_version=4)
    server = conn.compute.create_server(
        name="s",
        flavor_id="1",
        image_id=conn.image.find_image("fake-image").id,
        networks=[{"uuid": net.id}],
        user_data=base64.b64encode(b"hello").decode(),
    )
    return str(server.id)


def test_admin_api_refuses_tenant_tokens(cloud: SimCloudHandle, conn: Connection) -> None:
    response = httpx.get(f"{cloud.base_url}/_sim/resources", headers={"X-Auth-Token": conn.auth_token})
    assert response.status_code == 403
    assert httpx.get(f"{cloud.base_url}/_sim/resources").status_code == 401


def test_admin_api_inspects_and_injects(
    cloud: SimCloudHandle, conn: Connection, admin_conn: Connection
) -> None:
    server_id = _boot(conn)
    headers = {"X-Auth-Token": admin_conn.auth_token}
    base = cloud.base_url
    resources = httpx.get(f"{base}/_sim/resources", headers=headers).json()
    assert [s["id"] for s in resources["servers"]] == [server_id]
    assert httpx.get(f"{base}/_sim/servers/{server_id}/user-data", headers=headers).json() == {
        "user_data": "hello"
    }

    assert (
        httpx.put(f"{base}/_sim/delays", headers=headers, json={"boot_delay": 1.5}).json()["boot_delay"]
        == 1.5
    )
    assert cloud.sim.boot_delay == 1.5
    assert (
        httpx.post(f"{base}/_sim/inject/quota-failures", headers=headers, json={"count": 2}).status_code
        == 204
    )
    assert (
        httpx.put(f"{base}/_sim/quotas/demo", headers=headers, json={"instances": 7}).json()["quota"][
            "instances"
        ]
        == 7
    )
    assert httpx.delete(f"{base}/_sim/servers/{server_id}", headers=headers).status_code == 204
    assert cloud.sim.get_server(server_id) is None
    assert httpx.delete(f"{base}/_sim/servers/{server_id}", headers=headers).status_code == 404


def test_admin_api_revokes_refuses_rotates_and_recreates(
    cloud: SimCloudHandle, conn: Connection, admin_conn: Connection
) -> None:
    headers = {"X-Auth-Token": admin_conn.auth_token}
    base = cloud.base_url
    public_id = conn.network.find_network("public").id
    recreated = httpx.post(f"{base}/_sim/external-networks/public/recreate", headers=headers)
    assert recreated.status_code == 200
    assert recreated.json()["id"] not in (None, public_id)
    missing = httpx.post(f"{base}/_sim/external-networks/nope/recreate", headers=headers)
    assert missing.status_code == 404
    assert (
        httpx.post(f"{base}/_sim/inject/refused-tokens", headers=headers, json={"count": 3}).status_code
        == 204
    )
    assert cloud.sim.take_token_refusal()
    cloud.sim.refuse_next_tokens(0)
    password = httpx.put(f"{base}/_sim/users/demo/password", headers=headers, json={"password": "new"})
    assert password.status_code == 204
    assert cloud.sim.authenticate(username="demo", password="new", project_name="demo") is not None
    assert (
        httpx.put(f"{base}/_sim/users/nobody/password", headers=headers, json={"password": "x"}).status_code
        == 404
    )
    assert httpx.put(f"{base}/_sim/users/demo/password", headers=headers, json={}).status_code == 400
    revoked = httpx.post(f"{base}/_sim/identity/revoke-tokens", headers=headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] >= 1
    assert cloud.sim.identify(admin_conn.auth_token) is None
