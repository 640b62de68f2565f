"""``python -m nodesim``: the node booter as a process of its own, until SIGTERM or SIGINT.

Owned by ``nodesim``. ``kaas up`` runs the booter in a thread; a deployment of separate processes on a
simulated (or a VM-less real) cloud runs it here, as the chaos test does (``tests/chaos``), which kills
it like any other part: every stand-in apiserver and agent of the process dies with it, and the booter
started again on the same ``--state-dir`` boots each cluster that still has servers, with its objects.

``--only-clusters FILE`` limits it to the cluster ids listed in the file (one per line, read again when it
changes): on a shared cloud, other people's kaas servers are none of this booter's business.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from nodesim.booter import NodeBooter


class ClusterList:
    """The cluster ids of a file, read again whenever the file changed (by its modification time)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: int | None = None
        self._ids: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def __call__(self, cluster_id: str) -> bool:
        with self._lock:
            try:
                stamp = self._path.stat().st_mtime_ns
            except FileNotFoundError:
                return False
            if stamp != self._stamp:
                self._ids = frozenset(
                    line.strip() for line in self._path.read_text().splitlines() if line.strip()
                )
                self._stamp = stamp
            return cluster_id in self._ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nodesim", description="Boot simulated kaas nodes")
    parser.add_argument("--clouds-yaml", type=Path, required=True, help="clouds.yaml with an admin cloud")
    parser.add_argument("--admin-cloud", required=True, help="the admin cloud's name in clouds.yaml")
    parser.add_argument(
        "--rbac-manifest", type=Path, required=True, help="kaas's RBAC manifest for stand-ins"
    )
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="kubeconfigs and each cluster's objects"
    )
    parser.add_argument("--kubernetes-version", default="v1.30.2", help="when a node's config names none")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between server listings")
    parser.add_argument("--only-clusters", type=Path, help="a file of the cluster ids to boot, one per line")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    booter = NodeBooter(
        clouds_yaml=args.clouds_yaml,
        admin_cloud=args.admin_cloud,
        rbac_manifest=args.rbac_manifest,
        state_dir=args.state_dir,
        kubernetes_version_default=args.kubernetes_version,
        poll_interval=args.poll_interval,
        cluster_filter=ClusterList(args.only_clusters) if args.only_clusters else None,
        persist=True,
    )
    with booter:
        print(f"nodesim: booting the nodes of {args.clouds_yaml} ({args.admin_cloud})", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
