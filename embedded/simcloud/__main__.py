"""``python -m simcloud --port P --state-dir D``: run the simulated cloud standalone until interrupted.

With ``--persist`` the cloud lives in the state directory and a restart on it (same port) is the same cloud;
``--durable`` also writes every change before answering it, so even SIGKILL loses nothing it confirmed.
SIGTERM stops it cleanly (a last snapshot).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from simcloud.state import DEFAULT_EXTERNAL_CIDR
from simcloud.testing import run_simcloud


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simcloud", description="A simulated OpenStack on loopback"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--state-dir", type=Path, required=True, help="where clouds.yaml is written")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="seconds a server stays in BUILD")
    parser.add_argument("--lb-delay", type=float, default=2.0, help="seconds a load balancer stays PENDING_*")
    parser.add_argument(
        "--external-cidr",
        default=DEFAULT_EXTERNAL_CIDR,
        help="subnet of the external network; each cluster's router takes one address of it",
    )
    parser.add_argument("--persist", action="store_true", help="keep the cloud in the state directory")
    parser.add_argument(
        "--durable", action="store_true", help="with --persist: every change on disk before it is answered"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with run_simcloud(
        state_dir=args.state_dir,
        boot_delay=args.boot_delay,
        lb_delay=args.lb_delay,
        port=args.port,
        external_cidr=args.external_cidr,
        persist=args.persist,
        durable=args.durable,
    ) as handle:
        print(f"simcloud on {handle.base_url}; clouds.yaml: {handle.clouds_yaml}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
