"""``kaas up`` in its own process, for the end-to-end tests: ``running_kaas_up`` starts it in a temporary
home on a free port and stops it; ``KaasUp`` runs the CLI against it and reads its simulated cloud.

Its clusters run the real Kubernetes programs wherever the tests do (``tests.kube_targets.default_kind``:
always where services are required): ``kaas up --kubernetes real`` with the cache the programs are in, and
the test holds a control-plane slot per cluster it boots (``control_planes``); else the stand-in."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openstack
import pytest
from openstack.config import loader

from tests.kube_targets import REAL, control_plane_slots, default_kind, releases

KAAS = [sys.executable, "-m", "kaas_cli.main"]
START_TIMEOUT_SECONDS = 60


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KaasUp:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.state_dir = home / ".kaas"
        self.env = {**os.environ, "HOME": str(home), "KAAS_CLI_CONFIG": str(self.state_dir / "cli.yaml")}
        self.env.pop("KAAS_DATABASE_URL", None)
        self.kubernetes = default_kind()
        built = releases()
        if built:  # the temporary HOME has no cache: point kaas up at the one the programs are in
            self.env["KAAS_CACHE_DIR"] = str(next(iter(built.values())).parent.parent)
        self.url = f"https://127.0.0.1:{port}"
        self.ca_file = self.state_dir / "tls" / "ca.crt"
        self.admin_token = ""

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KAAS, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def cloud_resources(self) -> dict[str, list[str]]:
        """Everything in the simulated cloud, seen through the Nova/Neutron/Octavia APIs as admin."""
        config = loader.OpenStackConfig(
            config_files=[str(self.state_dir / "simcloud" / "clouds.yaml")], load_envvars=False
        )
        conn = openstack.connection.Connection(config=config.get_one(cloud="sim-admin"))
        try:
            tagged = {
                "servers": [s.name for s in conn.compute.servers(all_projects=True)],
                "networks": [n.name for n in conn.network.networks() if not n.is_router_external],
                "routers": [r.name for r in conn.network.routers()],
                "security_groups": [g.name for g in conn.network.security_groups() if g.name != "default"],
                "server_groups": [g.name for g in conn.compute.server_groups(all_projects=True)],
                "load_balancers": [lb.name for lb in conn.load_balancer.load_balancers()],
            }
        finally:
            conn.close()
        return tagged

    def start(self, *options: str) -> subprocess.Popen[str]:
        """``kaas up --port <port> <options>`` in its own process (its log appended to ``kaas-up.log``);
        returns once it says it is up, with its printed admin token in ``admin_token``."""
        log_path = self.home / "kaas-up.log"
        log_path.touch()
        starts = log_path.read_text().count("kaas is up")
        with log_path.open("a") as log:
            process = subprocess.Popen(
                [*KAAS, "up", "--port", str(self.port), "--kubernetes", self.kubernetes, *options],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"kaas up exited: {log_path.read_text()}")
            printed = log_path.read_text()
            tokens = re.findall(r"admin token \(also saved for the CLI\): (\S+)", printed)
            # it says so before its server has bound the port: wait for the port too
            if printed.count("kaas is up") > starts and len(tokens) > starts and port_open(self.port):
                self.admin_token = tokens[-1]
                return process
            time.sleep(0.2)
        process.kill()
        pytest.fail(f"kaas up did not start: {log_path.read_text()}")


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue  # exited meanwhile
    return pids


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM, *, up: KaasUp | None = None) -> None:
    """Stop a ``kaas up`` with ``sig`` (SIGTERM, or SIGINT as Ctrl-C does), killing it after 30 s. With
    ``up``: every process it started (a real control plane's, all named by paths in its state directory)
    must be gone with it; any left is killed and fails the test."""
    process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    left = processes_mentioning(str(up.state_dir)) if up is not None else []
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"kaas up left processes running: {left}"


@contextmanager
def running_kaas_up(
    home: Path, *options: str, control_planes: int = 0, env: dict[str, str] | None = None
) -> Iterator[KaasUp]:
    """``kaas up --port <free> <options>`` until the block ends (its printed admin token: ``admin_token``),
    holding ``control_planes`` slots when its clusters are real; ``env``: settings it reads (``KAAS_*``)."""
    up = KaasUp(home, free_port())
    up.env.update(env or {})
    with control_plane_slots(control_planes if up.kubernetes == REAL else 0):
        process = up.start(*options)
        try:
            yield up
        finally:
            stop(process, up=up)
