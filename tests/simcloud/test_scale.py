"""Scale: many clusters' servers in one project; a tag-filtered list costs what it returns, not the table."""

from __future__ import annotations

import base64
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
