"""The routes ``benchmarks/k8s_path.py`` measures to one real kube-apiserver, each started as processes and
stopped when its block ends: nginx, Rancher's remotedialer, kaas; and why Konnectivity is missing.

Owned by the k8s-path benchmark; its smoke test (``tests/benchmarks/test_k8s_path.py``) starts the anchors
through the same functions. Every route is a ``Route``: a base URL, a path prefix, the headers and TLS
verification a client needs. Every server binds 127.0.0.1.

- ``direct_route``: the apiserver itself, as its admin (the ``system:masters`` client certificate).
- ``nginx_route``: nginx as a plain one-hop reverse proxy (keep-alive upstream, no buffering), from a
  config in a temp dir; unprivileged: its workers run as ``nobody`` when we are root.
- ``remotedialer_route``: ``benchmarks/anchors/remotedialer`` (built by ``build_remotedialer.sh`` when
  missing): its client dials its server over a WebSocket and the server proxies through that tunnel.
- ``kaas_route``: the tunnel server's k8s proxy and the API's, and one agent, as ``benchmarks/tunnel.py``
  starts them (its rig, imported unchanged), the agent's apiserver the real one with the agent's
  ServiceAccount.

The anchors check one static bearer token (a string compare) and present the admin's client certificate
upstream: they measure the transport, not authorization. kaas authenticates the caller's API token in
PostgreSQL and authorizes it, and its agent impersonates the caller: that work is part of its figures.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._tunnel_sessions import RIG, child, free_port, in_registry, tunnel_server, wait_until  # noqa: E402
from benchmarks.tunnel import K8S_PROXY_STARTED, REDIS_URL, database, ready_file, redis_db, seed  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.session import make_engine  # noqa: E402
from nodesim.control_planes import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT  # noqa: E402
from nodesim.kube_admin import apply_documents, issue_service_account_token, load_manifest  # noqa: E402
from provider.bootstrap import rbac_manifest  # noqa: E402
from simcloud.kube.testing import write_kubeconfig  # noqa: E402

BUILD_REMOTEDIALER = ROOT / "benchmarks" / "anchors" / "build_remotedialer.sh"
KONNECTIVITY_MODULE = "sigs.k8s.io/apiserver-network-proxy"
READY_TIMEOUT_SECONDS = 60.0
INTERNAL_SECRET = "bench-internal-secret-" + "0123456789abcdef" * 3


class RouteUnavailable(Exception):
    """A route that cannot run here (its program missing or not buildable); the message says why."""


@dataclass(frozen=True)
class Upstream:
    """One kube-apiserver and its admin's credentials, as files (nginx and the Go program read files)."""

    url: str  # the apiserver's own https URL (not a balancer in front of it)
    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("https://").rstrip("/")

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def admin_client(self, *, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=timeout, trust_env=False)


@dataclass(frozen=True)
class Route:
    name: str
    base_url: str
    prefix: str  # prepended to the Kubernetes path
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    verify: ssl.SSLContext | bool = False  # plain HTTP to the first hop unless the route is TLS itself
    note: str = ""  # what the table says besides the figures (how it authenticates)

    def client(self, *, timeout: float = 60.0, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={**self.headers, **(headers or {})},
            verify=self.verify,
            timeout=timeout,
            trust_env=False,
        )


def direct_route(upstream: Upstream) -> Route:
    return Route("direct", upstream.url, "", verify=upstream.ssl_context(), note="admin client certificate")


def wait_for_route(route: Route, *, proc: subprocess.Popen[bytes], what: str) -> None:
    """Until a small GET through ``route`` answers 200 (a tunnel answers 503 until its client is in)."""

    def answers() -> bool:
        try:
            with route.client(timeout=5.0) as client:
                return client.get(route.prefix + "/api/v1/namespaces/default").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(what, answers, proc=proc, timeout=READY_TIMEOUT_SECONDS)


# --- nginx --------------------------------------------------------------------------------------------


def nginx_config(*, workdir: Path, port: int, upstream: Upstream, token: str) -> str:
    # as root the workers drop to nobody (the master reads the certificates first); otherwise nginx
    # ignores the directive, so say it only when it applies
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client-body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream apiserver {{
        server {upstream.host_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 4m;
        location / {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass https://apiserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_ssl_certificate {upstream.cert_file};
            proxy_ssl_certificate_key {upstream.key_file};
            proxy_ssl_trusted_certificate {upstream.ca_file};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


@contextmanager
def nginx_route(upstream: Upstream, workdir: Path) -> Iterator[Route]:
    program = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if program is None:
        raise RouteUnavailable("nginx is not installed (Debian: apt-get install nginx-light)")
    folder = workdir / "nginx"
    folder.mkdir(mode=0o700)
    token = secrets.token_urlsafe(24)
    # nginx cannot report a port it picked: the OS picks one here and nginx binds it a moment later
    port = free_port()
    config = folder / "nginx.conf"
    config.write_text(nginx_config(workdir=folder, port=port, upstream=upstream, token=token))
    config.chmod(0o600)
    with child(
        [program, "-p", str(folder), "-c", str(config)], env=dict(os.environ), log=workdir / "nginx.log"
    ) as proc:
        route = Route(
            "nginx",
            f"http://127.0.0.1:{port}",
            "",
            {"Authorization": f"Bearer {token}"},
            note="static token; presents the admin certificate",
        )
        wait_for_route(route, proc=proc, what="nginx")
        yield route


# --- remotedialer --------------------------------------------------------------------------------------


def remotedialer_program() -> Path:
    """The built anchor; ``build_remotedialer.sh`` builds it first when these sources lack a build."""
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        raise RouteUnavailable("no Go toolchain to build the remotedialer anchor")
    result = subprocess.run(["bash", str(BUILD_REMOTEDIALER)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RouteUnavailable(f"building the remotedialer anchor failed: {result.stderr.strip()[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@contextmanager
def remotedialer_route(upstream: Upstream, workdir: Path, *, program: Path | None = None) -> Iterator[Route]:
    program = program or remotedialer_program()
    proxy_token = secrets.token_urlsafe(24)
    env = {**os.environ, "ANCHOR_TUNNEL_TOKEN": secrets.token_urlsafe(24), "ANCHOR_PROXY_TOKEN": proxy_token}
    ready = workdir / "remotedialer.json"
    with ExitStack() as stack:
        server = stack.enter_context(
            child(
                [
                    str(program),
                    "server",
                    "-ready-file",
                    str(ready),
                    "-apiserver",
                    upstream.url,
                    "-ca",
                    str(upstream.ca_file),
                    "-cert",
                    str(upstream.cert_file),
                    "-key",
                    str(upstream.key_file),
                ],
                env=env,
                log=workdir / "remotedialer-server.log",
            )
        )
        url = ready_file(ready, server, "the remotedialer server")["url"]
        client = stack.enter_context(
            child(
                [
                    str(program),
                    "client",
                    "-connect",
                    url.replace("http://", "ws://") + "/connect",
                    "-allow",
                    upstream.host_port,
                ],
                env=env,
                log=workdir / "remotedialer-client.log",
            )
        )
        route = Route(
            "remotedialer",
            url,
            "",
            {"Authorization": f"Bearer {proxy_token}"},
            note="static token; presents the admin certificate",
        )
        wait_for_route(route, proc=client, what="the remotedialer tunnel")
        yield route


# --- Konnectivity ----------------------------------------------------------------------------------------


def konnectivity_refusal() -> str | None:
    """Why Konnectivity's proxy server and agent cannot be built here (None if the module proxy serves
    them). Only ``konnectivity-client``, the apiserver's side, is a module of its own; the server and the
    agent are in ``sigs.k8s.io/apiserver-network-proxy``."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        return "no Go toolchain to ask the Go module proxy"
    result = subprocess.run(
        [go, "list", "-m", "-versions", KONNECTIVITY_MODULE],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(os.sep),
        timeout=60,
    )
    if result.returncode == 0 and len(result.stdout.split()) > 1:
        return None
    if "403" in result.stderr or "404" in result.stderr or "410" in result.stderr:
        return "not served by the Go module proxy"
    return f"the Go module proxy did not answer: {result.stderr.strip()[-300:]}"


# --- kaas -------------------------------------------------------------------------------------------------


@contextmanager
def kaas_route(upstream: Upstream, workdir: Path) -> Iterator[tuple[Route, Route]]:
    """A fresh database and Redis database (``benchmarks/tunnel.py``'s), the tunnel server (with its k8s
    proxy listener), the API and one agent, each its own process; the agent talks to ``upstream`` with its
    ServiceAccount's token after kaas's RBAC manifest is applied there (as the agent's manifest applies it
    in a user cluster). Two routes: ``kaas``, the tunnel server's own k8s proxy (where the ingress sends
    ``/k8s``: one hop of ours), and ``kaas API``, the API's k8s proxy (``kaas up``'s path: two hops)."""
    with upstream.admin_client() as admin:
        apply_documents(admin, load_manifest(rbac_manifest()))
        agent_token = issue_service_account_token(
            admin, namespace=AGENT_NAMESPACE, name=AGENT_SERVICE_ACCOUNT, expiration_seconds=6 * 3600
        )
    kubeconfig = write_kubeconfig(
        workdir / "agent.kubeconfig",
        server=upstream.url,
        token=agent_token.token,
        ca=upstream.ca_file.read_bytes(),
        namespace=AGENT_NAMESPACE,
    )
    with ExitStack() as stack:
        db_url = stack.enter_context(database())
        redis_client = stack.enter_context(redis_db())
        upgrade_database(db_url)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        seeded = seed(engine, clusters=1)
        cluster_id, cluster_token = seeded.clusters[0]
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAAS_DATABASE_URL": db_url,
            "KAAS_REDIS_URL": REDIS_URL,
            "KAAS_SECRET_KEY": "bench-secret-key-" + "y" * 32,
            "KAAS_TUNNEL_INTERNAL_SECRET": INTERNAL_SECRET,
        }
        tunnel_log = workdir / "kaas-tunnel.log"
        tunnel = stack.enter_context(
            tunnel_server({**env, "KAAS_K8S_PROXY_PORT": "0"}, tunnel_log, internal_secret=INTERNAL_SECRET)
        )
        k8s_proxy_url = wait_until(
            "the tunnel server's k8s proxy",
            lambda: (
                (found := K8S_PROXY_STARTED.search(tunnel_log.read_text(errors="replace"))) and found["url"]
            ),
            proc=tunnel.proc,
            timeout=READY_TIMEOUT_SECONDS,
        )
        api = stack.enter_context(
            child([*RIG, "api", str(workdir / "api.json")], env=env, log=workdir / "kaas-api.log")
        )
        api_url = ready_file(workdir / "api.json", api, "the kaas API")["url"]
        spec = workdir / "agent.json"
        spec.write_text(
            json.dumps(
                {
                    "tunnel_url": tunnel.tunnel_url,
                    "kubeconfig": str(kubeconfig),
                    "agents": [[cluster_id, cluster_token]],
                }
            )
        )
        agent = stack.enter_context(
            child(
                [*RIG, "agents", str(spec), str(workdir / "agent.ready")],
                env=env,
                log=workdir / "kaas-agent.log",
            )
        )
        wait_until(
            "the kaas agent to connect",
            lambda: in_registry(redis_client, [cluster_id]) == 1,
            proc=agent,
            timeout=READY_TIMEOUT_SECONDS,
        )
        one_hop = Route(
            "kaas",
            k8s_proxy_url,
            f"/k8s/clusters/{cluster_id}",
            {"Authorization": f"Bearer {seeded.user_token}"},
            note="the tunnel server's k8s proxy; API token of a project owner; the agent impersonates it",
        )
        via_api = Route(
            "kaas API",
            api_url,
            f"/k8s/clusters/{cluster_id}",
            {"Authorization": f"Bearer {seeded.user_token}"},
            note="the API's k8s proxy, then the tunnel server's internal endpoint (kaas up's path)",
        )
        wait_for_route(one_hop, proc=agent, what="the tunnel server's k8s proxy")
        wait_for_route(via_api, proc=agent, what="the API's k8s proxy")
        yield one_hop, via_api
