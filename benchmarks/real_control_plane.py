"""Real control-plane benchmark: what one user cluster's real control plane costs nodesim to start and to keep
running, started the way the node booter starts it (``nodesim.control_planes.ControlPlanes.start``: the
cluster's PKI, etcd, kube-apiserver, controller manager, scheduler and kwok, kaas's RBAC applied, the
``default`` ServiceAccount made).

    .venv/bin/python benchmarks/real_control_plane.py                  # the newest built release
    .venv/bin/python benchmarks/real_control_plane.py --version v1.36.3 --count 3

The programs come from ``bash scripts/kube-bin.sh`` (found in its cache by ``nodesim.kube_releases``). For
each of ``--count`` control planes started one after another (all kept running, as nodesim keeps one per
cluster), prints the time until the apiserver is ready and the controller manager and scheduler hold their
leases, the time until ``ControlPlanes.start`` returns (RBAC applied, ``default`` ServiceAccount made: what
a cluster waits before its agent starts), the time until two kwok Nodes are Ready and a 2-replica
Deployment's pods are Running, and the resident memory of each process once that Deployment runs. The
machine's load average is printed first: on a shared machine, the times follow it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nodesim.kube_real as kube_real  # noqa: E402
from nodesim.control_planes import (  # noqa: E402
    ClusterRequest,
    ControlPlanes,
    NodeSpec,
    RealClusterControlPlane,
)
from nodesim.kube_releases import built_releases, kube_cache_dir  # noqa: E402

RBAC_MANIFEST = ROOT / "provider" / "bootstrap" / "manifests" / "kaas-rbac.yaml"
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}},
    },
}


def wait(what: str, ready: Callable[[], bool], *, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def nodes_ready(client: httpx.Client) -> bool:
    nodes = client.get("/api/v1/nodes").json()["items"]
    return len(nodes) == 2 and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        for node in nodes
    )


def pods_running(client: httpx.Client) -> bool:
    pods = client.get("/api/v1/namespaces/default/pods").json()["items"]
    return [pod["status"].get("phase") for pod in pods] == ["Running", "Running"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=None, help="a built release (default: the newest)")
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    releases = built_releases(kube_cache_dir(os.environ, home=Path.home()))
    if not releases:
        raise SystemExit("no real Kubernetes programs: run bash scripts/kube-bin.sh")
    version = args.version or list(releases)[-1]
    planes = ControlPlanes(rbac_manifest=RBAC_MANIFEST, releases=releases)
    load = os.getloadavg()[0]
    print(f"Kubernetes {version}; load average {load:.1f} on {os.cpu_count()} cores", flush=True)

    lease_times: list[float] = []
    original = kube_real._lease_held

    def timed_lease(api: object, name: str) -> object:
        check = original(api, name)  # type: ignore[arg-type]

        def held() -> bool:
            result = check()
            if result and name == kube_real.LEASE_HOLDERS[-1]:
                lease_times.append(time.monotonic())
            return result
        return held

    kube_real._lease_held = timed_lease  # type: ignore[assignment]
    running: list[RealClusterControlPlane] = []
    with tempfile.TemporaryDirectory(prefix="kaas-real-cp-") as scratch:
        try:
            for index in range(args.count):
                started = time.monotonic()
                plane = planes.start(ClusterRequest(cluster_id=f"bench-{index}", version=version,
                                                    workdir=Path(scratch) / f"cluster-{index}"))
                assert isinstance(plane, RealClusterControlPlane)
                running.append(plane)
                start_returned = time.monotonic() - started
                leases = lease_times[-1] - started
                plane.sync_nodes({
                    name: NodeSpec(name=name, server_id=name, ready=True, labels=(), taints=(),
                                   kubelet_version=version)
                    for name in ("node-a", "node-b")
                })
                client = plane.admin_client
                wait("two Ready nodes", partial(nodes_ready, client))
                deployments = "/apis/apps/v1/namespaces/default/deployments"
                client.post(deployments, json=DEPLOYMENT).raise_for_status()
                wait("two Running pods", partial(pods_running, client))
                running_after = time.monotonic() - started
                rss = plane.control_plane.rss_bytes()
                parts = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in rss.items())
                print(f"control plane {index + 1}: ready (leases held) in {leases:.1f} s, started (RBAC, "
                      f"default ServiceAccount) in {start_returned:.1f} s, pods Running after "
                      f"{running_after:.1f} s; RSS {sum(rss.values()) / 2**20:.0f} MiB ({parts} MiB)",
                      flush=True)
        finally:
            for plane in running:
                plane.close()


if __name__ == "__main__":
    main()
