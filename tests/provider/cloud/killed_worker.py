"""A worker killed between creating a resource and tagging it, for the contract tests.

Run as ``python -m tests.provider.cloud.killed_worker CLOUDS_YAML CLOUD CLUSTER_ID EXTERNAL_NETWORK KIND``:
it ensures the cluster's network and security groups with the real driver and SIGKILLs itself (no
``finally``, no cleanup, as the kernel's OOM killer or a node failure would) at the moment the driver is
about to send the ``PUT .../tags`` of the first resource of ``KIND`` (network, subnet, router,
security_group). The cut is made in the client's HTTP layer, so it works against any cloud. Exit code 3:
the driver never tagged such a resource, and the calling test fails.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from provider.cloud.driver import NetworkSpec
from provider.cloud.openstack_driver import CloudSource, OpenStackDriver

NODE_CIDR = "10.20.0.0/24"
COLLECTIONS = {
    "network": "networks",
    "subnet": "subnets",
    "router": "routers",
    "security_group": "security-groups",
}


class DieBeforeTagging(HTTPAdapter):
    """Sends every request, except that the tag request of ``collection`` kills the process instead."""

    def __init__(self, collection: str) -> None:
        super().__init__()
        self._tag_path = re.compile(rf"/v2\.0/{re.escape(collection)}/[^/]+/tags$")

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        if request.method == "PUT" and self._tag_path.search(urlsplit(request.url or "").path):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().send(request, *args, **kwargs)


def main(clouds_yaml: str, cloud_name: str, cluster_id: str, external_network: str, kind: str) -> int:
    source = CloudSource(cloud_name=cloud_name, config_file=Path(clouds_yaml), timeout=30)
    connection = source.connect()
    connection.session.session.mount("http://", DieBeforeTagging(COLLECTIONS[kind]))
    driver = OpenStackDriver(connection, name=cloud_name, source=source)
    driver.ensure_network(
        NetworkSpec(cluster_id=cluster_id, cidr=NODE_CIDR, external_network=external_network)
    )
    driver.ensure_security_groups(cluster_id, node_cidr=NODE_CIDR)
    return 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
