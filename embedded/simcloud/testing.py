"""Run the simulated cloud on a free loopback port for tests and ``kaas up``.

``run_simcloud`` starts uvicorn in a daemon thread on 127.0.0.1, waits until it answers, writes a
``clouds.yaml`` with the clouds ``sim`` (user demo, project demo) and ``sim-admin`` (admin) into the state
directory (0600: it holds passwords), and stops the server and the ticker on exit. With ``persist=True``
(``kaas up``) the cloud's state lives in ``state_dir/cloud.json`` and its port in ``state_dir/port``:
started again on the same directory, it is the same cloud at the same address (another port only if that
one is taken).
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
import yaml

from simcloud.app import create_app
from simcloud.serving import QuietServer
from simcloud.state import DEFAULT_EXTERNAL_CIDR, SimCloud

STARTUP_TIMEOUT = 15.0


@dataclass
class SimCloudHandle:
    sim: SimCloud  # in-memory state + injection API
    base_url: str  # http://127.0.0.1:PORT
    clouds_yaml: Path  # clouds.yaml with clouds "sim" (user demo, project demo) and "sim-admin" (admin)
    cloud_name: str = "sim"
    admin_cloud_name: str = "sim-admin"


def clouds_config(
    base_url: str, *, cloud_name: str = "sim", admin_cloud_name: str = "sim-admin"
) -> dict[str, object]:
    """The clouds.yaml content for a simulator at ``base_url``."""

    def cloud(user: str, project: str) -> dict[str, object]:
        return {
            "auth": {
                "auth_url": f"{base_url}/identity/v3",
                "username": user,
                "password": "secret",
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "interface": "public",
            "identity_api_version": 3,
        }

    return {"clouds": {cloud_name: cloud("demo", "demo"), admin_cloud_name: cloud("admin", "admin")}}


def write_clouds_yaml(state_dir: Path, base_url: str) -> Path:
    """Write ``clouds.yaml`` readable by its owner only (it holds the clouds' passwords), in a directory
    created 0700; an existing file keeps no wider mode than 0600."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "clouds.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "# written by simcloud: a simulated OpenStack (password: secret)\n"
            + yaml.safe_dump(clouds_config(base_url), sort_keys=False)
        )
    return path


def _listen(port: int) -> socket.socket:
    """A loopback listener on ``port``, or on a free one if ``port`` is taken."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (else ~40 ms delayed-ACK stalls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        if port == 0:
            sock.close()
            raise
        sock.bind(("127.0.0.1", 0))
    return sock


def _wait_until_up(port: int, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("simcloud's server thread stopped during startup")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/identity/v3")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"simcloud did not answer on 127.0.0.1:{port} within {timeout}s")


@contextmanager
def run_simcloud(
    *,
    state_dir: Path,
    boot_delay: float = 0.0,
    lb_delay: float = 0.0,
    port: int = 0,
    external_cidr: str = DEFAULT_EXTERNAL_CIDR,
    persist: bool = False,
    durable: bool = False,
) -> Iterator[SimCloudHandle]:
    """Serve a simulated cloud on 127.0.0.1 (``port`` 0: a free one) until the block exits: a fresh one, or
    with ``persist`` the one ``state_dir`` holds (``durable``: each change on disk before it is answered)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    sim = SimCloud(
        boot_delay=boot_delay,
        lb_delay=lb_delay,
        external_cidr=external_cidr,
        state_file=state_dir / "cloud.json" if persist else None,
        durable=durable,
    )
    port_file = state_dir / "port"
    if persist and port == 0 and port_file.exists():
        port = int(port_file.read_text())
    sock = _listen(port)
    actual_port = sock.getsockname()[1]
    if persist:
        port_file.write_text(str(actual_port))
    config = uvicorn.Config(
        create_app(sim),
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_keep_alive=30,
    )
    server = QuietServer(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="simcloud-http", daemon=True
    )
    sim.start()
    thread.start()
    try:
        _wait_until_up(actual_port, thread, STARTUP_TIMEOUT)
        base_url = f"http://127.0.0.1:{actual_port}"
        yield SimCloudHandle(sim=sim, base_url=base_url, clouds_yaml=write_clouds_yaml(state_dir, base_url))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sim.stop()
        sock.close()
