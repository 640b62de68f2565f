"""Tunnel benchmark: what kaas's kubectl path (the tunnel server's own k8s proxy → WebSocket → agent, and the
older API k8s proxy → tunnel server → ...) costs compared with talking to the apiserver directly, and what
an idle agent session costs the tunnel server.

    .venv/bin/python benchmarks/tunnel.py           # full size: 2000 GETs, 64 MiB body, 1000 sessions
    .venv/bin/python benchmarks/tunnel.py --quick   # 200 GETs, 16 MiB, 100 sessions
    .venv/bin/python benchmarks/tunnel.py --quick --interleaved   # latency: the routes' requests in turns

Every piece is real and in its own process, on 127.0.0.1 with OS-picked ports: the Kubernetes stand-in
(``simcloud.kube``, plain HTTP), the tunnel server as ``kaas tunnel`` runs it (``run_tunnel_server()``,
Redis registry in db 13, or KAAS_TEST_REDIS_URL), the API (``create_app`` with the Redis registry), the
agents (``run_agent``).
This process only seeds PostgreSQL (a fresh database, ``alembic upgrade head``) and drives the load with one
keep-alive ``httpx.Client``; the child roles live in ``benchmarks/_tunnel_rig.py``.

What is measured:
1. Latency of ``GET /api/v1/namespaces/default``, sequential, after a warm-up: p50/p99 DIRECT to the
   stand-in (cluster-admin token), via the tunnel server's INTERNAL endpoint (what the API calls: a signed
   assertion of cluster and caller per request), THROUGH KAAS (the tunnel server's own k8s proxy,
   ``kaas_tunnel.k8s_proxy``, where the ingress sends ``/k8s``: ``/k8s/clusters/{id}/...`` with a user API
   token of a project owner) and THROUGH KAAS API (the same request to the API's k8s proxy, one hop more).
   Targets: through kaas p50 ≤ 2x and p99 ≤ 3x direct.
2. Throughput of one large response: LIST of configmaps holding N x 1 MiB (created beforehand), the body read
   raw (``Accept-Encoding: identity``), best of 3, the same four ways. Target: through kaas ≥ 80% of direct.
3. Memory of a FRESH tunnel-server process holding idle agent sessions: VmRSS (``/proc/PID/status``) idle,
   with a tenth of the agents, and with all of them (agents: ``run_agent`` tasks with a one-hour report
   interval in two client processes, their apiserver the stand-in). Sessions are counted live only when
   both ``cluster_agents.connected`` and the Redis registry say so. Reports KiB per session overall
   ((all - idle) / n) and marginal ((all - tenth) / (n - tenth), without one-time costs). Target ≤ 100 KiB.

Every listener has TCP_NODELAY (as a real apiserver's has; see ``_tunnel_rig``): without it a response
written in two pieces waits ~40 ms for the client's delayed ACK, which would swamp the comparison.

Everything started here is stopped, and the database dropped and its Redis database (13, or
KAAS_TEST_REDIS_URL) flushed, also on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._tunnel_rig import ADMIN_TOKEN, SA_TOKEN  # noqa: E402
from benchmarks._tunnel_sessions import (  # noqa: E402
    RIG,
    Fleet,
    child,
    in_registry,
    run_phase,
    tunnel_server,
    wait_until,
)
from kaas_api.users.service import create_user  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.models import (  # noqa: E402
    Cluster,
    ClusterAgent,
    ClusterPhase,
    Project,
    ProjectMember,
    Region,
    Role,
)
from kaas_core.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from kaas_core.internal_hop import (  # noqa: E402
    ASSERTION_HEADER,
    INTERNAL_PROXY_PREFIX,
    ProxyAssertion,
    assertion_key,
)
from kaas_core.security import AGENT_TOKEN_PREFIX, generate_token, hash_token  # noqa: E402
from simcloud.kube.testing import write_kubeconfig  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# flushed before and after: a developer sharing this Redis gives the benchmark its own database
REDIS_URL = os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
INTERNAL_SECRET = "bench-internal-secret-" + "0123456789abcdef" * 3
SMALL_GET = "/api/v1/namespaces/default"
BIG_LIST = "/api/v1/namespaces/default/configmaps"
CONFIGMAP_DATA_BYTES = 1024 * 1024 - 4096  # a ConfigMap holds at most 1 MiB; leave room for metadata
BENCH_USER = "bench-user"
LATENCY_TARGET = 2.0  # p50 through kaas / direct
P99_TARGET = 3.0  # p99 through kaas / direct
THROUGHPUT_TARGET = 0.8
THROUGH_KAAS = "through kaas"
THROUGH_KAAS_API = "through kaas API"
K8S_PROXY_STARTED = re.compile(r"k8s proxy at (?P<url>http://\S+)")


@dataclass(frozen=True)
class Sizes:
    gets: int
    warmup: int
    body_mib: int
    sessions: int


FULL = Sizes(gets=2000, warmup=200, body_mib=64, sessions=1000)
QUICK = Sizes(gets=200, warmup=50, body_mib=16, sessions=100)


# --- processes, ports, readiness ---------------------------------------------------------------------


def ready_file(path: Path, proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.exists() else None

    result: dict[str, Any] = wait_until(what, read, proc=proc, timeout=60)
    return result


# --- state: database, Redis -----------------------------------------------------------------------------


@contextmanager
def database() -> Iterator[str]:
    name = f"kaas_bench_tunnel_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@dataclass(frozen=True)
class Seeded:
    user_token: str
    clusters: list[tuple[str, str]]  # (cluster id, agent token)


def seed(engine: sa.Engine, *, clusters: int) -> Seeded:
    """A project owned by a non-admin user with an API token, and ``clusters`` clusters with agent tokens."""
    agent_tokens = [generate_token(AGENT_TOKEN_PREFIX) for _ in range(clusters)]
    with session_scope(make_session_factory(engine)) as session:
        user, user_token = create_user(session, name=BENCH_USER)
        region = Region(
            name="bench",
            cloud="bench",
            kubernetes_versions=["1.30.2"],
            default_kubernetes_version="1.30.2",
            flavors=[{"name": "m1.small", "vcpus": 1, "ram_mb": 2048}],
            image="ubuntu-22.04",
            external_network="public",
        )
        project = Project(name="bench")
        session.add_all([region, project])
        session.flush()
        session.add(ProjectMember(project_id=project.id, user_id=user.id, role=Role.OWNER.value))
        rows = [
            Cluster(
                project_id=project.id,
                region_id=region.id,
                name=f"bench-{index}",
                kubernetes_version="1.30.2",
                control_plane_count=1,
                control_plane_flavor="m1.small",
                node_cidr="10.0.0.0/24",
                pod_cidr="10.244.0.0/16",
                service_cidr="10.96.0.0/12",
                phase=ClusterPhase.RUNNING.value,
                agent_token_hash=hash_token(token),
            )
            for index, token in enumerate(agent_tokens)
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    return Seeded(user_token=user_token, clusters=list(zip(ids, agent_tokens, strict=True)))


# --- measurements ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    base_url: str
    prefix: str  # prepended to the Kubernetes path
    headers: list[tuple[str, str]]
    # what each request needs besides the headers (the internal endpoint's per-request signed assertion)
    on_request: tuple[Callable[[httpx.Request], None], ...] = ()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_latency(route: Route, *, count: int, warmup: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``count`` sequential small GETs on one keep-alive connection."""
    samples: list[float] = []
    with httpx.Client(
        base_url=route.base_url,
        headers=route.headers,
        timeout=30,
        trust_env=False,
        event_hooks={"request": list(route.on_request)},
    ) as client:
        for index in range(warmup + count):
            started = time.perf_counter()
            response = client.get(route.prefix + SMALL_GET)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(
                    f"{route.name}: GET {SMALL_GET} → {response.status_code} {response.text[:300]}"
                )
            if index >= warmup:
                samples.append(elapsed * 1000)
    return percentile(samples, 0.50), percentile(samples, 0.99)


def measure_throughput(route: Route, *, expected_bytes: int, rounds: int = 3) -> float:
    """Best of ``rounds`` MB/s (10^6 bytes) of the big LIST, read raw, start of request to last byte."""
    best = 0.0
    headers = [*route.headers, ("Accept-Encoding", "identity")]
    with httpx.Client(
        base_url=route.base_url,
        headers=headers,
        timeout=300,
        trust_env=False,
        event_hooks={"request": list(route.on_request)},
    ) as client:
        for _ in range(rounds):
            received = 0
            started = time.perf_counter()
            with client.stream("GET", route.prefix + BIG_LIST) as response:
                if response.status_code != 200:
                    response.read()
                    raise RuntimeError(f"{route.name}: LIST → {response.status_code} {response.text[:300]}")
                for chunk in response.iter_raw(chunk_size=1024 * 1024):
                    received += len(chunk)
            elapsed = time.perf_counter() - started
            if received < expected_bytes:
                raise RuntimeError(f"{route.name}: LIST body {received} bytes, expected ≥ {expected_bytes}")
            best = max(best, received / elapsed / 1e6)
    return best


def create_configmaps(standin_url: str, count: int) -> int:
    """``count`` ConfigMaps of ~1 MiB each, straight to the stand-in; returns the total data bytes."""
    data = "x" * CONFIGMAP_DATA_BYTES
    with httpx.Client(
        base_url=standin_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60, trust_env=False
    ) as client:
        for index in range(count):
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"bench-{index:03d}", "namespace": "default"},
                "data": {"blob": data},
            }
            response = client.post(BIG_LIST, json=body)
            if response.status_code != 201:
                raise RuntimeError(f"creating a ConfigMap → {response.status_code} {response.text[:300]}")
    return count * CONFIGMAP_DATA_BYTES


# --- the run --------------------------------------------------------------------------------------------


def ratio_line(label: str, direct: float, other: float, *, target: str, ok: bool) -> str:
    return f"  {label:<34} {other / direct:6.2f}x   target {target:<10} {'OK' if ok else 'MISSED'}"


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    sessions: list[int]  # one phase per entry
    only_sessions: bool
    hold: float
    per_process: int
    cpu_hogs: int
    interleaved: bool = False


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """``count`` processes that burn a core each until the block ends: a loaded machine on purpose."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run(options: Options, workdir: Path) -> bool:
    """Every measurement; True when every target was met."""

    def say(text: str) -> None:
        print(text, flush=True)

    sizes = options.sizes
    all_met = True
    with ExitStack() as stack:
        db_url = stack.enter_context(database())
        redis_client = stack.enter_context(redis_db())
        upgrade_database(db_url)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        seeded = seed(engine, clusters=1 + max(options.sessions, default=0))
        bench_cluster, bench_token = seeded.clusters[0]
        idle_clusters = seeded.clusters[1:]
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAAS_DATABASE_URL": db_url,
            "KAAS_REDIS_URL": REDIS_URL,
            "KAAS_SECRET_KEY": "bench-secret-key-" + "y" * 32,
            "KAAS_TUNNEL_INTERNAL_SECRET": INTERNAL_SECRET,  # the API's name of the shared secret
        }

        say("starting the stand-in (a separate process) ...")
        standin = stack.enter_context(
            child([*RIG, "standin", str(workdir / "standin.json")], env=env, log=workdir / "standin.log")
        )
        standin_url = ready_file(workdir / "standin.json", standin, "the stand-in")["url"]
        kubeconfig = write_kubeconfig(workdir / "agent.kubeconfig", server=standin_url, token=SA_TOKEN)
        if options.cpu_hogs:
            say(f"starting {options.cpu_hogs} CPU hog(s): busy loops, for the whole run")
            stack.enter_context(cpu_hogs(options.cpu_hogs))
        say("")
        say(
            f"kaas tunnel benchmark ({'quick' if sizes is QUICK else 'full'}) — 2 CPU cores shared with "
            f"other work{f' and {options.cpu_hogs} CPU hog(s)' if options.cpu_hogs else ''};"
            " every process on 127.0.0.1"
        )
        say("every listener has TCP_NODELAY, as a real apiserver's has")
        say("")
        if not options.only_sessions:
            all_met &= request_path(
                sizes,
                say,
                stack=stack,
                env=env,
                workdir=workdir,
                standin_url=standin_url,
                kubeconfig=kubeconfig,
                redis_client=redis_client,
                bench=(bench_cluster, bench_token),
                user_token=seeded.user_token,
                interleaved=options.interleaved,
            )
        fleet = Fleet(
            engine=engine,
            redis_client=redis_client,
            env=env,
            kubeconfig=kubeconfig,
            workdir=workdir,
            internal_secret=INTERNAL_SECRET,
            say=say,
        )
        for number, sessions in enumerate(options.sessions, 3):
            say(
                f"{number}. {sessions} idle agent sessions on a fresh tunnel-server process, held"
                f" {options.hold:.0f} s, then the server killed -9 and restarted"
            )
            redis_client.flushdb()
            with engine.begin() as conn:
                conn.execute(sa.delete(ClusterAgent))
            all_met &= run_phase(
                fleet, idle_clusters[:sessions], hold=options.hold, per_process=options.per_process
            )
            say("")
        say(f"logs of every process: {workdir}")
        say("stopping everything ...")
    say(f"stopped; database dropped, Redis {REDIS_URL} flushed")
    return all_met


def request_path(
    sizes: Sizes,
    say: Callable[[str], None],
    *,
    stack: ExitStack,
    env: dict[str, str],
    workdir: Path,
    standin_url: str,
    kubeconfig: Path,
    redis_client: redis.Redis,
    bench: tuple[str, str],
    user_token: str,
    interleaved: bool = False,
) -> bool:
    """Measurements 1 and 2: latency and throughput of the kubectl path, four ways."""
    bench_cluster, bench_token = bench
    say("starting the tunnel server (with its k8s proxy), the API and one agent (separate processes) ...")
    tunnel_log = workdir / "tunnel-main.log"
    tunnel = stack.enter_context(
        tunnel_server({**env, "KAAS_K8S_PROXY_PORT": "0"}, tunnel_log, internal_secret=INTERNAL_SECRET)
    )
    k8s_proxy_url = wait_until(
        "the tunnel server's k8s proxy",
        lambda: (found := K8S_PROXY_STARTED.search(tunnel_log.read_text(errors="replace"))) and found["url"],
        proc=tunnel.proc,
        timeout=60,
    )
    api = stack.enter_context(
        child([*RIG, "api", str(workdir / "api.json")], env=env, log=workdir / "api.log")
    )
    api_url = ready_file(workdir / "api.json", api, "the API")["url"]
    spec = workdir / "agent-main.json"
    spec.write_text(
        json.dumps(
            {
                "tunnel_url": tunnel.tunnel_url,
                "kubeconfig": str(kubeconfig),
                "agents": [[bench_cluster, bench_token]],
            }
        )
    )
    agent = stack.enter_context(
        child(
            [*RIG, "agents", str(spec), str(workdir / "agent-main.ready")],
            env=env,
            log=workdir / "agent-main.log",
        )
    )
    wait_until(
        "the benchmark agent to connect",
        lambda: in_registry(redis_client, [bench_cluster]) == 1,
        proc=agent,
        timeout=60,
    )

    say(f"creating {sizes.body_mib} ConfigMaps of ~1 MiB on the stand-in ...")
    data_bytes = create_configmaps(standin_url, sizes.body_mib)

    def sign(request: httpx.Request) -> None:
        """What the API's k8s proxy adds: an assertion of the cluster and caller, for this request."""
        target = request.url.raw_path.decode("latin-1").removeprefix(INTERNAL_PROXY_PREFIX)
        request.headers[ASSERTION_HEADER] = ProxyAssertion.issue(
            cluster_id=bench_cluster,
            user=BENCH_USER,
            groups=("kaas:authenticated", "kaas:owner"),
            method=request.method,
            target=target,
            now=time.time(),
        ).sign(assertion_key(INTERNAL_SECRET))

    routes = [
        Route("direct", standin_url, "", [("Authorization", f"Bearer {ADMIN_TOKEN}")]),
        Route("tunnel internal endpoint", tunnel.internal_url, INTERNAL_PROXY_PREFIX, [], on_request=(sign,)),
        Route(
            THROUGH_KAAS,
            k8s_proxy_url,
            f"/k8s/clusters/{bench_cluster}",
            [("Authorization", f"Bearer {user_token}")],
        ),
        Route(
            THROUGH_KAAS_API,
            api_url,
            f"/k8s/clusters/{bench_cluster}",
            [("Authorization", f"Bearer {user_token}")],
        ),
    ]
    latency_ok = report_latency(routes, sizes, say, interleaved=interleaved)
    throughput_ok = report_throughput(routes, sizes, data_bytes, say, interleaved=interleaved)
    return latency_ok and throughput_ok


def measure_latency_interleaved(
    routes: list[Route], *, count: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """p50 and p99 in ms per route, the routes' requests taken in turns (one each per round, each route on
    its own keep-alive connection): a machine whose load drifts over the run loads every route alike, so
    the ratios hold where route-after-route figures do not."""
    samples: dict[str, list[float]] = {route.name: [] for route in routes}
    with ExitStack() as stack:
        clients = [
            (
                route,
                stack.enter_context(
                    httpx.Client(
                        base_url=route.base_url,
                        headers=route.headers,
                        timeout=30,
                        trust_env=False,
                        event_hooks={"request": list(route.on_request)},
                    )
                ),
            )
            for route in routes
        ]
        for index in range(warmup + count):
            for route, client in clients:
                started = time.perf_counter()
                response = client.get(route.prefix + SMALL_GET)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{route.name}: GET {SMALL_GET} → {response.status_code}")
                if index >= warmup:
                    samples[route.name].append(elapsed * 1000)
    return {name: (percentile(taken, 0.50), percentile(taken, 0.99)) for name, taken in samples.items()}


def report_latency(
    routes: list[Route], sizes: Sizes, say: Callable[[str], None], *, interleaved: bool = False
) -> bool:
    if interleaved:
        latency = measure_latency_interleaved(routes, count=sizes.gets, warmup=sizes.warmup)
    else:
        latency = {
            route.name: measure_latency(route, count=sizes.gets, warmup=sizes.warmup) for route in routes
        }
    direct, direct_p99 = latency["direct"]
    internal = latency["tunnel internal endpoint"][0]
    kaas, kaas_p99 = latency[THROUGH_KAAS]
    say(
        f"1. small GET {SMALL_GET}: {sizes.gets} sequential after {sizes.warmup} warm-up, "
        + ("the routes in turns, one keep-alive client each" if interleaved else "one keep-alive client")
    )
    say(f"  {'route':<34} {'p50 ms':>8} {'p99 ms':>8}")
    for route in routes:
        p50, p99 = latency[route.name]
        say(f"  {route.name:<34} {p50:8.2f} {p99:8.2f}")
    p50_ok = kaas <= LATENCY_TARGET * direct
    p99_ok = kaas_p99 <= P99_TARGET * direct_p99
    say(ratio_line("p50 through kaas / direct", direct, kaas, target=f"≤ {LATENCY_TARGET:g}x", ok=p50_ok))
    say(ratio_line("p99 through kaas / direct", direct_p99, kaas_p99, target=f"≤ {P99_TARGET:g}x", ok=p99_ok))
    say(
        ratio_line(
            "p50 through kaas API / direct", direct, latency[THROUGH_KAAS_API][0], target="(info)", ok=True
        )
    )
    say(ratio_line("p50 internal endpoint / direct", direct, internal, target="(info)", ok=True))
    say("")
    return p50_ok and p99_ok


def report_throughput(
    routes: list[Route],
    sizes: Sizes,
    data_bytes: int,
    say: Callable[[str], None],
    *,
    interleaved: bool = False,
) -> bool:
    rates: list[float]
    if interleaved:  # three rounds of one LIST per route, in turns; each route's best
        rounds = [
            [measure_throughput(route, expected_bytes=data_bytes, rounds=1) for route in routes]
            for _ in range(3)
        ]
        rates = [max(column) for column in zip(*rounds, strict=True)]
    else:
        rates = [measure_throughput(route, expected_bytes=data_bytes) for route in routes]
    by_name = {route.name: rate for route, rate in zip(routes, rates, strict=True)}
    direct, internal, kaas = by_name["direct"], by_name["tunnel internal endpoint"], by_name[THROUGH_KAAS]
    say(
        f"2. one LIST of {sizes.body_mib} ConfigMaps x ~1 MiB ({data_bytes / 1e6:.0f} MB of data), "
        "best of 3, body read raw"
    )
    say(f"  {'route':<34} {'MB/s':>8}")
    for route, rate in zip(routes, rates, strict=True):
        say(f"  {route.name:<34} {rate:8.1f}")
    ok = kaas >= THROUGHPUT_TARGET * direct
    say(ratio_line("through kaas / direct", direct, kaas, target=f"≥ {THROUGHPUT_TARGET:g}x", ok=ok))
    say(ratio_line("through kaas API / direct", direct, by_name[THROUGH_KAAS_API], target="(info)", ok=True))
    say(ratio_line("internal endpoint / direct", direct, internal, target="(info)", ok=True))
    say("")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 GETs, 16 MiB, 100 sessions")
    parser.add_argument(
        "--sessions",
        type=int,
        nargs="+",
        metavar="N",
        help="one idle-session phase per N (default 1000; 100 with --quick), e.g. --sessions 1000 5000",
    )
    parser.add_argument("--only-sessions", action="store_true", help="skip latency and throughput")
    parser.add_argument(
        "--hold", type=float, default=90.0, help="seconds every session must stay live (default 90)"
    )
    parser.add_argument(
        "--agents-per-process", type=int, default=1000, help="agents per client process (default 1000)"
    )
    parser.add_argument(
        "--cpu-hog", type=int, default=0, metavar="N", help="N busy-loop processes for the whole run"
    )
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="the routes' requests in turns (latency) and LIST rounds in turns (throughput): ratios robust"
        " to a machine whose load drifts",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    options = Options(
        sizes=sizes,
        sessions=args.sessions or [sizes.sessions],
        only_sessions=args.only_sessions,
        hold=args.hold,
        per_process=args.agents_per_process,
        cpu_hogs=args.cpu_hog,
        interleaved=args.interleaved,
    )
    # SIGTERM unwinds like Ctrl-C, so every process and the database are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="kaas-bench-tunnel-"))
    try:
        met = run(options, workdir)
    except KeyboardInterrupt:
        print(f"interrupted; everything stopped and cleaned up (logs: {workdir})", file=sys.stderr)
        sys.exit(130)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
