"""Real control-plane benchmark: what one ``nodesim.kube_real`` control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) costs to start and to keep running.

    .venv/bin/python benchmarks/real_control_plane.py                  # the newest pinned release
    .venv/bin/python benchmarks/real_control_plane.py --bin-dir DIR --count 3

The programs come from ``bash scripts/kube-bin.sh`` (its last line is the default ``--bin-dir``). For each
of ``--count`` control planes started one after another (all kept running, as nodesim keeps one per
cluster), prints the time until the apiserver is ready and the controller manager and scheduler hold their
leases, the time until a kwok node is Ready and a 2-replica Deployment's pods are Running, and the resident
memory of each process once that Deployment runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodesim.kube_real import RealControlPlane, fake_node, start_control_plane, write_cluster_pki  # noqa: E402

KUBECTL = Path(sys.executable).parent / "kubectl"
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


def kubectl(cp: RealControlPlane, *args: str, stdin: str | None = None) -> None:
    subprocess.run([str(KUBECTL), "--kubeconfig", str(cp.admin_kubeconfig), *args], input=stdin, text=True,
                   capture_output=True, check=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    bin_dir = args.bin_dir or Path(subprocess.run(
        ["bash", str(ROOT / "scripts" / "kube-bin.sh")], capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1])
    planes: list[RealControlPlane] = []
    with tempfile.TemporaryDirectory(prefix="kaas-real-cp-") as scratch:
        try:
            for index in range(args.count):
                pki = Path(scratch) / f"pki-{index}"
                write_cluster_pki(pki)
                started = time.monotonic()
                cp = start_control_plane(bin_dir=bin_dir, pki_dir=pki, work_dir=Path(scratch) / f"cp-{index}")
                planes.append(cp)
                ready = time.monotonic() - started
                kubectl(cp, "apply", "-f", "-", stdin=json.dumps(fake_node("fake-0")))
                kubectl(cp, "wait", "--for=condition=Ready", "node/fake-0", "--timeout=120s")
                kubectl(cp, "apply", "-f", "-", stdin=json.dumps(DEPLOYMENT))
                kubectl(cp, "rollout", "status", "deployment/web", "--timeout=240s")
                running = time.monotonic() - started
                rss = cp.rss_bytes()
                parts = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in rss.items())
                print(f"control plane {index + 1}: ready in {ready:.1f} s, pods Running after "
                      f"{running:.1f} s; RSS {sum(rss.values()) / 2**20:.0f} MiB ({parts} MiB)", flush=True)
        finally:
            for cp in planes:
                cp.stop()


if __name__ == "__main__":
    main()
