"""Scale: many clusters' servers in one project; a tag-filtered list costs what it returns, not the table."""

from __future__ import annotations

import base64
import statistics
import time

import httpx
from openstack.connection import Connection

from simcloud.testing import SimCloudHandle

CLUSTERS = 300
SERVERS_PER_CLUSTER = 4


def test_tag_filtered_server_list_stays_fast_with_many_clusters(
    cloud: SimCloudHandle, conn: Connection
) -> None:
    net = conn.network.create_network(name="shared")
    conn.network.create_subnet(network_id=net.id, cidr="10.128.0.0/16", ip_version=4)
    image_id = conn.image.find_image("ubuntu-22.04").id
    headers = {"X-Auth-Token": conn.auth_token, "OpenStack-API-Version": "compute 2.90"}
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    with httpx.Client(base_url=f"{cloud.base_url}/compute/v2.1", headers=headers) as client:
        for cluster in range(CLUSTERS):
            for index in range(SERVERS_PER_CLUSTER):
                response = client.post(
                    "/servers",
                    json={
                        "server": {
                            "name": f"kaas-{cluster}-{index}",
                            "flavorRef": "1",
                            "imageRef": image_id,
                            "networks": [{"uuid": net.id}],
                            "tags": [f"kaas-cluster={cluster}"],
                            "user_data": user_data,
                        }
                    },
                )
                assert response.status_code == 202, response.text
        started = time.perf_counter()
        for cluster in range(0, CLUSTERS, 10):
            found = client.get("/servers/detail", params={"tags": f"kaas-cluster={cluster}"}).json()[
                "servers"
            ]
            assert len(found) == SERVERS_PER_CLUSTER
        per_list = (time.perf_counter() - started) / (CLUSTERS // 10)
    assert per_list < 0.05, f"a tag-filtered list took {per_list * 1000:.1f} ms"
    assert len(cloud.sim.servers()) == CLUSTERS * SERVERS_PER_CLUSTER
    assert all(s.status == "ACTIVE" for s in cloud.sim.servers())


def test_paging_through_a_large_cloned_fleet_returns_each_record_once_and_deep_pages_stay_fast(
    cloud: SimCloudHandle, conn: Connection
) -> None:
    """The bulk observation's listings (``marker``/``limit``) over a fleet cloned from one cluster
    (``SimCloud.clone_cluster``): every server and network exactly once, and a page at the end of the
    listing within a bound (generous: the machine is shared)."""
    source = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    tag = f"kaas-cluster={source}"
    net = conn.network.create_network(name="kaas-00000000-net")
    conn.network.set_tags(net, [tag])
    conn.network.create_subnet(network_id=net.id, cidr="10.0.0.0/24", ip_version=4)
    image_id = conn.image.find_image("ubuntu-22.04").id
    for index in range(2):
        conn.compute.create_server(
            name=f"kaas-00000000-w-{index}",
            flavor_id="1",
            image_id=image_id,
            networks=[{"uuid": net.id}],
            tags=[tag],
        )
    copies = [f"{i:08d}-0000-4000-8000-{i:012d}" for i in range(1, 2500)]
    assert cloud.sim.clone_cluster(source, copies) > 2499 * 4
    headers = {"X-Auth-Token": conn.auth_token, "OpenStack-API-Version": "compute 2.90"}
    with httpx.Client(base_url=cloud.base_url, headers=headers) as client:

        def page_through(path: str, key: str) -> tuple[list[dict[str, object]], list[float]]:
            items: list[dict[str, object]] = []
            took: list[float] = []
            params: dict[str, str | int] = {"limit": 200}
            while True:
                started = time.perf_counter()
                page = client.get(path, params=params).json()[key]
                took.append(time.perf_counter() - started)
                items += page
                if len(page) < 200:
                    return items, took
                params = {"limit": 200, "marker": str(page[-1]["id"])}

        servers, server_pages = page_through("/compute/v2.1/servers/detail", "servers")
        networks, _ = page_through("/network/v2.0/networks", "networks")
    assert len(servers) == len({s["id"] for s in servers}) == 5000
    assert {str(s["name"])[:13] for s in servers} >= {f"kaas-{i:08d}" for i in range(0, 2500, 499)}
    own = [n for n in networks if any(str(t).startswith("kaas-cluster=") for t in n["tags"])]
    assert len(own) == len({n["id"] for n in own}) == 2500
    assert statistics.median(server_pages[-5:]) < 0.1, f"deep pages took {server_pages[-5:]}"
