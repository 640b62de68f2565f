"""Tunnel benchmark: what kaas's kubectl path (API k8s proxy → tunnel server → WebSocket → agent) costs
compared with talking to the apiserver directly, and what an idle agent session costs the tunnel server.

    .venv/bin/python benchmarks/tunnel.py           # full size: 2000 GETs, 64 MiB body, 1000 sessions
    .venv/bin/python benchmarks/tunnel.py --quick   # 200 GETs, 16 MiB, 100 sessions

Every piece is real and in its own process, on 127.0.0.1 with OS-picked ports: the Kubernetes stand-in
(``simcloud.kube``, plain HTTP), the tunnel server as ``kaas tunnel`` runs it (``run_tunnel_server()``,
Redis registry in db 13), the API (``create_app`` with the Redis registry), the agents (``run_agent``).
This process only seeds PostgreSQL (a fresh database, ``alembic upgrade head``) and drives the load with one
keep-alive ``httpx.Client``; the child roles live in ``benchmarks/_tunnel_rig.py``.

What is measured:
1. Latency of ``GET /api/v1/namespaces/default``, sequential, after a warm-up: p50/p99 DIRECT to the
   stand-in (cluster-admin token), via the tunnel server's INTERNAL endpoint (what the API calls: a signed
   assertion of cluster and caller per request), and THROUGH KAAS (``/k8s/clusters/{id}/...`` with a user
   API token of a project owner). Target: through kaas p50 ≤ 1.3x direct p50.
2. Throughput of one large response: LIST of configmaps holding N x 1 MiB (created beforehand), the body read
   raw (``Accept-Encoding: identity``), best of 3, the same three ways. Target: through kaas ≥ 50% of direct.
3. Memory of a FRESH tunnel-server process holding idle agent sessions: VmRSS (``/proc/PID/status``) idle,
   with a tenth of the agents, and with all of them (agents: ``run_agent`` tasks with a one-hour report
   interval in two client processes, their apiserver the stand-in). Sessions are counted live only when
   both ``cluster_agents.connected`` and the Redis registry say so. Reports KiB per session overall
   ((all - idle) / n) and marginal ((all - tenth) / (n - tenth), without one-time costs). Target ≤ 100 KiB.

Every listener has TCP_NODELAY (as a real apiserver's has; see ``_tunnel_rig``): without it a response
written in two pieces waits ~40 ms for the client's delayed ACK, which would swamp the comparison.

Everything started here is stopped, and the database dropped and Redis db 13 flushed, also on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
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
from kaas_core.tunnel_registry import KEY_PREFIX  # noqa: E402
from simcloud.kube.testing import write_kubeconfig  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"
INTERNAL_SECRET = "bench-internal-secret-" + "0123456789abcdef" * 3
RIG = [sys.executable, str(ROOT / "benchmarks" / "_tunnel_rig.py")]
SMALL_GET = "/api/v1/namespaces/default"
BIG_LIST = "/api/v1/namespaces/default/configmaps"
CONFIGMAP_DATA_BYTES = 1024 * 1024 - 4096  # a ConfigMap holds at most 1 MiB; leave room for metadata
BENCH_USER = "bench-user"
TUNNEL_STARTED = re.compile(r"agents at (?P<tunnel>ws://\S+), internal endpoint at (?P<internal>http://\S+)")
LATENCY_TARGET = 1.3
THROUGHPUT_TARGET = 0.5
KIB_PER_SESSION_TARGET = 100.0


@dataclass(frozen=True)
class Sizes:
    gets: int
    warmup: int
    body_mib: int
    sessions: int


FULL = Sizes(gets=2000, warmup=200, body_mib=64, sessions=1000)
QUICK = Sizes(gets=200, warmup=50, body_mib=16, sessions=100)


# --- processes, ports, readiness ---------------------------------------------------------------------


@contextmanager
def child(args: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own session (Ctrl-C reaches only us); SIGTERM, then SIGKILL, at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until(
    what: str, check: Callable[[], Any], *, proc: subprocess.Popen[bytes] | None, timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode} (see its log)")
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


def ready_file(path: Path, proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.exists() else None

    result: dict[str, Any] = wait_until(what, read, proc=proc, timeout=60)
    return result


@dataclass(frozen=True)
class TunnelProcess:
    proc: subprocess.Popen[bytes]
    tunnel_url: str
    internal_url: str


@contextmanager
def tunnel_server(env: dict[str, str], log: Path) -> Iterator[TunnelProcess]:
    """``kaas tunnel`` in its own process on OS-picked ports, read back from its startup log line."""
    child_env = {
        **env,
        "KAAS_TUNNEL_HOST": "127.0.0.1",
        "KAAS_TUNNEL_PORT": "0",
        "KAAS_INTERNAL_HOST": "127.0.0.1",
        "KAAS_INTERNAL_PORT": "0",
        "KAAS_TUNNEL_INTERNAL_SECRET": INTERNAL_SECRET,
    }
    log.unlink(missing_ok=True)
    with child([*RIG, "tunnel"], env=child_env, log=log) as proc:

        def started() -> re.Match[str] | None:
            return TUNNEL_STARTED.search(log.read_text(errors="replace")) if log.exists() else None

        found = wait_until("the tunnel server", started, proc=proc, timeout=60)
        yield TunnelProcess(proc=proc, tunnel_url=found["tunnel"], internal_url=found["internal"])


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


def connected_in_db(engine: sa.Engine, cluster_ids: list[str]) -> int:
    with engine.connect() as conn:
        count = conn.scalar(
            sa.select(sa.func.count())
            .select_from(ClusterAgent)
            .where(ClusterAgent.connected.is_(True), ClusterAgent.cluster_id.in_(cluster_ids))
        )
    return int(count or 0)


def reported_in_db(engine: sa.Engine, cluster_ids: list[str]) -> int:
    """Sessions whose first status report arrived (the agent's one burst of work after connecting)."""
    with engine.connect() as conn:
        count = conn.scalar(
            sa.select(sa.func.count())
            .select_from(ClusterAgent)
            .where(ClusterAgent.kubernetes_version.is_not(None), ClusterAgent.cluster_id.in_(cluster_ids))
        )
    return int(count or 0)


def in_registry(client: redis.Redis, cluster_ids: list[str]) -> int:
    wanted = set(cluster_ids)
    found = {
        (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(KEY_PREFIX)
        for key in client.scan_iter(match=KEY_PREFIX + "*", count=1000)
    }
    return len(wanted & found)


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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft} (hard {hard})"
    return "?"


# --- the run --------------------------------------------------------------------------------------------


def ratio_line(label: str, direct: float, other: float, *, target: str, ok: bool) -> str:
    return f"  {label:<34} {other / direct:6.2f}x   target {target:<10} {'OK' if ok else 'MISSED'}"


def run(sizes: Sizes, workdir: Path) -> None:
    def say(text: str) -> None:
        print(text, flush=True)

    with ExitStack() as stack:
        db_url = stack.enter_context(database())
        redis_client = stack.enter_context(redis_db())
        upgrade_database(db_url)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        seeded = seed(engine, clusters=1 + sizes.sessions)
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

        say("starting the stand-in, the tunnel server, the API and one agent (separate processes) ...")
        standin = stack.enter_context(
            child([*RIG, "standin", str(workdir / "standin.json")], env=env, log=workdir / "standin.log")
        )
        standin_url = ready_file(workdir / "standin.json", standin, "the stand-in")["url"]
        kubeconfig = write_kubeconfig(workdir / "agent.kubeconfig", server=standin_url, token=SA_TOKEN)
        tunnel = stack.enter_context(tunnel_server(env, workdir / "tunnel-main.log"))
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
            Route(
                "tunnel internal endpoint",
                tunnel.internal_url,
                INTERNAL_PROXY_PREFIX,
                [],
                on_request=(sign,),
            ),
            Route(
                "through kaas (API /k8s proxy)",
                api_url,
                f"/k8s/clusters/{bench_cluster}",
                [("Authorization", f"Bearer {seeded.user_token}")],
            ),
        ]
        say("")
        say(
            f"kaas tunnel benchmark ({'quick' if sizes is QUICK else 'full'}) — 2 CPU cores shared with "
            "other work; every process on 127.0.0.1"
        )
        say("every listener has TCP_NODELAY, as a real apiserver's has")
        say("")
        report_latency(routes, sizes, say)
        report_throughput(routes, sizes, data_bytes, say)
        report_memory(
            sizes,
            say,
            engine=engine,
            redis_client=redis_client,
            clusters=idle_clusters,
            start_server=lambda: stack.enter_context(tunnel_server(env, workdir / "tunnel-idle.log")),
            start_agents=lambda label, spec: stack.enter_context(
                child(
                    [*RIG, "agents", str(spec), str(workdir / f"agents-{label}.ready")],
                    env=env,
                    log=workdir / f"agents-{label}.log",
                )
            ),
            kubeconfig=kubeconfig,
            workdir=workdir,
        )
        say("")
        say(f"logs of every process: {workdir}")
        say("stopping everything ...")
    say("stopped; database dropped, Redis db 13 flushed")


def report_latency(routes: list[Route], sizes: Sizes, say: Callable[[str], None]) -> None:
    latency: dict[str, tuple[float, float]] = {}
    for route in routes:
        latency[route.name] = measure_latency(route, count=sizes.gets, warmup=sizes.warmup)
    direct, internal, kaas = (latency[route.name][0] for route in routes)
    say(
        f"1. small GET {SMALL_GET}: {sizes.gets} sequential after {sizes.warmup} warm-up, "
        "one keep-alive client"
    )
    say(f"  {'route':<34} {'p50 ms':>8} {'p99 ms':>8}")
    for route in routes:
        p50, p99 = latency[route.name]
        say(f"  {route.name:<34} {p50:8.2f} {p99:8.2f}")
    say(
        ratio_line(
            "p50 through kaas / direct", direct, kaas, target="≤ 1.3x", ok=kaas <= LATENCY_TARGET * direct
        )
    )
    say(ratio_line("p50 internal endpoint / direct", direct, internal, target="(info)", ok=True))
    say("")


def report_throughput(routes: list[Route], sizes: Sizes, data_bytes: int, say: Callable[[str], None]) -> None:
    rates = [measure_throughput(route, expected_bytes=data_bytes) for route in routes]
    direct, internal, kaas = rates
    say(
        f"2. one LIST of {sizes.body_mib} ConfigMaps x ~1 MiB ({data_bytes / 1e6:.0f} MB of data), "
        "best of 3, body read raw"
    )
    say(f"  {'route':<34} {'MB/s':>8}")
    for route, rate in zip(routes, rates, strict=True):
        say(f"  {route.name:<34} {rate:8.1f}")
    ok = kaas >= THROUGHPUT_TARGET * direct
    say(ratio_line("through kaas / direct", direct, kaas, target="≥ 0.5x", ok=ok))
    say(ratio_line("internal endpoint / direct", direct, internal, target="(info)", ok=True))
    say("")


def report_memory(
    sizes: Sizes,
    say: Callable[[str], None],
    *,
    engine: sa.Engine,
    redis_client: redis.Redis,
    clusters: list[tuple[str, str]],
    start_server: Callable[[], TunnelProcess],
    start_agents: Callable[[str, Path], subprocess.Popen[bytes]],
    kubeconfig: Path,
    workdir: Path,
) -> None:
    """RSS of a fresh tunnel server: idle, with a tenth of the agents, with all (live in DB and registry)."""
    fresh = start_server()
    time.sleep(2)
    rss_idle = rss_kib(fresh.proc.pid)
    fds_idle = open_fds(fresh.proc.pid)
    tenth = max(1, sizes.sessions // 10)
    marks: list[tuple[int, int]] = []
    agents: subprocess.Popen[bytes] | None = None
    for label, group in (("first", clusters[:tenth]), ("rest", clusters[tenth:])):
        spec = workdir / f"agents-{label}.json"
        document = {"tunnel_url": fresh.tunnel_url, "kubeconfig": str(kubeconfig), "agents": group}
        spec.write_text(json.dumps(document))
        agents = start_agents(label, spec)
        ids = [cluster_id for cluster_id, _ in clusters[: tenth if label == "first" else None]]

        def all_live(ids: list[str] = ids) -> bool:
            return connected_in_db(engine, ids) == len(ids) and in_registry(redis_client, ids) == len(ids)

        wait_until(f"{len(ids)} agent sessions live", all_live, proc=agents, timeout=300)
        time.sleep(5)  # the first status reports (one burst per agent) settle
        if not all_live():
            raise RuntimeError(f"{len(ids)} sessions were live, then some were not")
        marks.append((len(ids), rss_kib(fresh.proc.pid)))
    assert agents is not None
    (n_tenth, rss_tenth), (n_all, rss_all) = marks
    reported = reported_in_db(engine, [cluster_id for cluster_id, _ in clusters])
    say(f"3. a fresh tunnel-server process (pid {fresh.proc.pid}), fd limit {fd_limit(fresh.proc.pid)}")
    say(f"  idle:                 VmRSS {rss_idle / 1024:8.1f} MiB, {fds_idle} fds")
    say(f"  {n_tenth:>5} sessions:       VmRSS {rss_tenth / 1024:8.1f} MiB")
    say(
        f"  {n_all:>5} sessions:       VmRSS {rss_all / 1024:8.1f} MiB, {open_fds(fresh.proc.pid)} fds "
        f"(live in cluster_agents and in the registry: {n_all}; first status report recorded: {reported})"
    )
    per_session = (rss_all - rss_idle) / n_all
    marginal = (rss_all - rss_tenth) / max(1, n_all - n_tenth)
    verdict = "OK" if per_session <= KIB_PER_SESSION_TARGET else "MISSED"
    say(
        f"  KiB per session:      {per_session:8.1f} overall, {marginal:.1f} marginal   "
        f"target ≤ 100   {verdict}"
    )
    say(
        f"  (the client process holding {n_all - n_tenth} agents: VmRSS {rss_kib(agents.pid) / 1024:.1f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 GETs, 16 MiB, 100 sessions")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every process and the database are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="kaas-bench-tunnel-"))
    try:
        run(QUICK if args.quick else FULL, workdir)
    except KeyboardInterrupt:
        print(f"interrupted; everything stopped and cleaned up (logs: {workdir})", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
