"""The child processes of ``benchmarks/tunnel.py``: each ``python benchmarks/_tunnel_rig.py <role> ...``.

Owned by the tunnel benchmark; nothing else imports it. Every role runs until SIGTERM/SIGINT and, once it
serves, writes a small JSON "ready" file (its URL) that the driver polls, so ports can be picked by the OS
(port 0) in the process that binds them. Logs go to stderr (the driver sends them to a file).

- ``standin URL_FILE``: the Kubernetes stand-in (``simcloud.kube``'s ``KubeStandin``, plain HTTP, kaas's RBAC
  manifest) on uvicorn in this process's main thread.

Listening sockets are made with ``proto=IPPROTO_TCP`` (``tcp_listener``): asyncio only sets TCP_NODELAY on
accepted sockets whose protocol is IPPROTO_TCP, and a ``socket.socket(AF_INET, SOCK_STREAM)`` listener has
protocol 0, so a response written in two pieces waits for the client's delayed ACK (~40 ms per request on
Linux). A real apiserver (Go) disables Nagle; so do these, and so do the tunnel server's listeners,
``run_kube_standin`` and the simulated cloud.
- ``tunnel``: the tunnel server exactly as ``kaas tunnel`` runs it (``run_tunnel_server()``,
  settings from ``KAAS_*``, ports 0), after raising this process's file-descriptor limit to its hard limit;
  the driver reads the bound ports from its INFO startup line.
- ``api URL_FILE``: the API (``create_app``) with the Redis tunnel registry, since ``kaas api`` does not
  pass one yet; a dispatcher that queues nothing (no reconciles happen here).
- ``agents SPEC_FILE URL_FILE``: many ``run_agent`` tasks in one process (the spec lists their cluster ids
  and tokens, the tunnel URL and the stand-in's kubeconfig), with the agent's default reconnect backoff;
  URL_FILE gets ``{"agents": n}`` once started. With ``lag_file`` in the spec, the process's loop lag
  (``agents.tunnel.loop_lag``, last 60 s) is written there every five seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from provider.bootstrap import rbac_manifest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SA_TOKEN = "bench-agent-service-account-token"  # noqa: S105 (a throwaway token of the stand-in)
ADMIN_TOKEN = "bench-cluster-admin-token"  # noqa: S105
KAAS_RBAC_MANIFEST = rbac_manifest()


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (one socket per agent session); returns the new soft limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def write_ready(path: str, data: dict[str, Any]) -> None:
    """Atomically, so the driver never reads half a file."""
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def tcp_listener() -> tuple[socket.socket, int]:
    """A listening socket on 127.0.0.1:<free port> whose accepted connections get TCP_NODELAY."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


def serve_asgi(app: Any, url_file: str) -> None:
    """Serve ``app`` on a free port until SIGINT/SIGTERM (uvicorn's own handlers); then write nothing more."""
    import uvicorn

    sock, port = tcp_listener()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", ws="none")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        write_ready(url_file, {"url": f"http://127.0.0.1:{port}"})
        await task

    asyncio.run(serve())
    sock.close()


def run_standin(url_file: str) -> None:
    from simcloud.kube.identity import Identity
    from simcloud.kube.server import KubeStandin

    tokens = {
        SA_TOKEN: Identity.service_account("kaas-system", "kaas-agent"),
        ADMIN_TOKEN: Identity("kubernetes-admin", ("system:masters",)),
    }
    standin = KubeStandin(version="v1.30.2", tokens=tokens, manifest_files=[KAAS_RBAC_MANIFEST])
    try:
        serve_asgi(standin.app, url_file)
    finally:
        standin.close()


def run_tunnel() -> None:
    """``kaas tunnel``, as shipped."""
    raise_fd_limit()
    from kaas_tunnel.main import run_tunnel_server

    # the driver reads the bound ports from the startup line ("agents at ..., internal endpoint at ...")
    logging.getLogger("kaas_tunnel.server").setLevel(logging.INFO)
    run_tunnel_server()


class NoDispatcher:
    """Queues nothing: the benchmark reconciles no cluster."""

    def send_reconcile(self, cluster_id: str, *, queue: str) -> None:
        return None

    def send_webhook_delivery(self, delivery_id: str) -> None:
        return None

    def ping(self) -> bool:
        return True


def run_api(url_file: str) -> None:

    from kaas_api.app import create_app
    from kaas_api.config import ApiSettings
    from kaas_core.db.session import make_engine, make_session_factory
    from kaas_core.tunnel_registry import RedisTunnelRegistry, bounded_redis

    settings = ApiSettings()
    redis_url = os.environ["KAAS_REDIS_URL"]
    engine = make_engine(settings.database_url)
    app = create_app(
        settings,
        session_factory=make_session_factory(engine),
        dispatcher=NoDispatcher(),
        tunnel_registry=RedisTunnelRegistry(bounded_redis(redis_url)),
    )
    try:
        serve_asgi(app, url_file)
    finally:
        engine.dispose()


def run_agents(spec_file: str, url_file: str) -> None:
    from pydantic import SecretStr

    from agents.config import AgentConfig, KubeconfigApiserver
    from agents.runtime import run_agent
    from agents.tunnel.loop_lag import LoopLagProbe

    raise_fd_limit()
    spec = json.loads(Path(spec_file).read_text())
    configs = [
        AgentConfig(
            tunnel_url=spec["tunnel_url"],
            cluster_id=cluster_id,
            agent_token=SecretStr(token),
            apiserver=KubeconfigApiserver(kubeconfig=Path(spec["kubeconfig"])),
            report_interval_seconds=spec.get("report_interval_seconds", 3600.0),
        )
        for cluster_id, token in spec["agents"]
    ]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        probe = LoopLagProbe(name=f"agents process {os.getpid()}")
        probe.start()
        tasks = [asyncio.create_task(run_agent(config, stop=stop)) for config in configs]
        write_ready(url_file, {"agents": len(tasks)})
        lag_file = spec.get("lag_file")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5.0)
            if lag_file:
                summary = probe.summary()
                write_ready(
                    lag_file,
                    {"p50": summary.p50, "p99": summary.p99, "max": summary.max, "max_ever": probe.max_ever},
                )
        await probe.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=20)

    asyncio.run(main())


def main(argv: list[str]) -> None:
    logging.basicConfig(
        level=getattr(logging, os.environ.get("BENCH_LOG_LEVEL", "WARNING")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    role, *args = argv
    if role == "standin":
        run_standin(*args)
    elif role == "tunnel":
        run_tunnel()
    elif role == "api":
        run_api(*args)
    elif role == "agents":
        run_agents(*args)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
