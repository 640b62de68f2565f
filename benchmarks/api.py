"""API throughput benchmark (issue 13): requests a second and latency of ``/healthz`` and of an authenticated
``GET /v1/projects/default/clusters/demo``, under wrk, against the API as production runs it.

    .venv/bin/python benchmarks/api.py           # warm-up 5 s a route, then 2 rounds of 20 s a route
    .venv/bin/python benchmarks/api.py --quick   # warm-up 2 s a route, then 1 round of 5 s a route

The production process layout, mirrored on this machine: deploy/kustomize runs the API as replicas of one
``kaas api`` process each (a pod with a limit of one CPU), behind a Service, with TLS ended at the ingress
(the Service's port is plain HTTP). Here that is one ``kaas api --reuse-port`` process per core
(``--processes``, default the machine's core count), all on one 127.0.0.1 port: the kernel spreads the
connections over them as the Service spreads them over pods. So the load is plain HTTP: TLS is the
ingress's cost, not the API's. Each process has the production settings: ``KAAS_ENVIRONMENT=production``
(its start-up check passes), JSON logs at INFO (uvicorn's access log included) written to a file, the
broker and the tunnel registry in Redis (``KAAS_TEST_REDIS_URL``, else db 15: flushed before and after),
and a fresh PostgreSQL database (``alembic upgrade head``) seeded here with a user who owns project
``default``, its API token, and a running cluster ``demo`` (one node pool, four node rows).

wrk (Debian's ``wrk``; a process of its own) sends the load: ``--connections`` (50) over ``--threads`` (2),
the token added by a Lua script (never on a command line). Each route is warmed up once, then every round
measures ``/healthz`` and the cluster GET one after the other, so their ratio comes from one moment of a
shared machine. Per round: requests a second, p50 and p99 (wrk's ``--latency``), errors, and the CPU time
the API processes and the database's backends spent per request (``/proc``: less noisy than rates when the
machine is shared). The verdict takes the median round: the cluster GET at ≥ 2,000 req/s with p99 ≤ 50 ms,
and ≥ 50 % of ``/healthz``'s rate. Exit status 1 when a target is missed.

Everything started here is stopped and the database dropped, also on Ctrl-C or SIGTERM; the processes' logs
stay in the work directory it prints.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._rows import Row, record  # noqa: E402
from kaas_api.users.service import create_user  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.models import (  # noqa: E402
    Cluster,
    ClusterPhase,
    Node,
    NodePool,
    Project,
    ProjectMember,
    Region,
    Role,
)
from kaas_core.db.session import make_engine, make_session_factory, session_scope  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PROJECT = "default"
CLUSTER = "demo"
CLUSTER_PATH = f"/v1/projects/{PROJECT}/clusters/{CLUSTER}"
HEALTH_PATH = "/healthz"
TARGET_RATE = 2000.0
TARGET_P99_SECONDS = 0.050
TARGET_RATIO = 0.5
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    warmup_seconds: int
    seconds: int
    rounds: int


FULL = Sizes(warmup_seconds=5, seconds=20, rounds=2)
QUICK = Sizes(warmup_seconds=2, seconds=5, rounds=1)


# --- state: database, Redis ------------------------------------------------------------------------------


@contextmanager
def database() -> Iterator[str]:
    name = f"kaas_bench_api_{uuid.uuid4().hex[:8]}"
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
def redis_db() -> Iterator[None]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()


def seed(engine: sa.Engine) -> str:
    """A user who owns project ``default`` and a running cluster ``demo`` in it; returns the user's token."""
    with session_scope(make_session_factory(engine)) as session:
        user, token = create_user(session, name="bench-user")
        region = Region(
            name="bench",
            cloud="bench",
            kubernetes_versions=["1.30.2"],
            default_kubernetes_version="1.30.2",
            flavors=[{"name": "m1.small", "vcpus": 1, "ram_mb": 2048}],
        )
        project = Project(name=PROJECT)
        session.add_all([region, project])
        session.flush()
        session.add(ProjectMember(project_id=project.id, user_id=user.id, role=Role.OWNER.value))
        cluster = Cluster(
            project_id=project.id,
            region_id=region.id,
            name=CLUSTER,
            kubernetes_version="1.30.2",
            control_plane_count=1,
            control_plane_flavor="m1.small",
            node_cidr="10.0.0.0/24",
            pod_cidr="10.244.0.0/16",
            service_cidr="10.96.0.0/12",
            phase=ClusterPhase.RUNNING.value,
            api_endpoint="https://192.0.2.10:6443",
            conditions=[
                {"type": kind, "status": "True", "reason": "Ready", "message": ""}
                for kind in ("NetworkReady", "ControlPlaneReady", "NodesReady", "AgentConnected")
            ],
        )
        session.add(cluster)
        session.flush()
        pool = NodePool(cluster_id=cluster.id, name="workers", flavor="m1.small", count=3)
        session.add(pool)
        session.flush()
        session.add(
            Node(cluster_id=cluster.id, role="control-plane", name="demo-cp-0", flavor="m1.small", ready=True)
        )
        session.add_all(
            Node(
                cluster_id=cluster.id,
                node_pool_id=pool.id,
                role="worker",
                name=f"demo-workers-{index}",
                flavor="m1.small",
                ready=True,
            )
            for index in range(3)
        )
    return token


# --- the API processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(args: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def api_env(db_url: str) -> dict[str, str]:
    """The settings a production API pod has (deploy/kustomize/base: settings.env and the Secret)."""
    return {
        **os.environ,
        "KAAS_ENVIRONMENT": "production",
        "KAAS_LOG_JSON": "true",
        "KAAS_LOG_LEVEL": "INFO",
        "KAAS_DATABASE_URL": db_url,
        "KAAS_BROKER_URL": REDIS_URL,
        "KAAS_REDIS_URL": REDIS_URL,
        "KAAS_SECRET_KEY": secrets.token_urlsafe(32),
        "KAAS_TUNNEL_INTERNAL_SECRET": secrets.token_urlsafe(32),
        "KAAS_METRICS_TOKEN": secrets.token_urlsafe(32),
        "KAAS_PUBLIC_URL": "https://kaas.example.com",
    }


def listening(pid: int, port: int) -> bool:
    """The process holds a socket listening on ``port`` (each ``--reuse-port`` process has its own; uvicorn
    listens once its start-up is complete)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    except FileNotFoundError:
        return False


def wait_listening(
    procs: list[subprocess.Popen[bytes]], *, port: int, logs: list[Path], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(range(len(procs)))
    while pending:
        for index in list(pending):
            if procs[index].poll() is not None:
                raise RuntimeError(f"API process exited with {procs[index].returncode}; see {logs[index]}")
            if listening(procs[index].pid, port):
                pending.remove(index)
        if time.monotonic() > deadline:
            raise RuntimeError(f"API processes did not start within {timeout}s; see {logs}")
        time.sleep(0.1)


# --- CPU accounting -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)


def backend_pids(engine: sa.Engine, db_name: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
            {"name": db_name},
        ).all()
    return [int(row[0]) for row in rows]


@dataclass(frozen=True)
class CpuMeter:
    api_pids: list[int]
    engine: sa.Engine
    db_name: str

    def snapshot(self) -> tuple[dict[int, float], dict[int, float], int]:
        """CPU seconds of the API processes and of the database's backends, and the connections opened to
        the database so far (a pool too small for the load opens one a request)."""
        api = {pid: cpu_seconds(pid) for pid in self.api_pids}
        database = {pid: cpu_seconds(pid) for pid in backend_pids(self.engine, self.db_name)}
        with self.engine.connect() as conn:
            sessions = conn.execute(
                sa.text("SELECT sessions FROM pg_stat_database WHERE datname = :name"), {"name": self.db_name}
            ).scalar_one()
        return api, database, int(sessions)


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


# --- wrk ------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class Run:
    requests: int
    rate: float
    p50: float
    p99: float
    errors: int  # non-2xx answers plus socket errors
    api_cpu: float  # CPU seconds of the API processes during the run
    db_cpu: float  # of the database's backends
    connections: int  # opened to the database during the run

    def line(self, name: str) -> str:
        per = 1000.0 / max(self.requests, 1)
        return (
            f"  {name:<12} {self.rate:8.0f} req/s   p50 {self.p50 * 1000:7.2f} ms"
            f"   p99 {self.p99 * 1000:7.2f} ms"
            f"   errors {self.errors}   CPU/request: API {self.api_cpu * per:.2f} ms,"
            f" PostgreSQL {self.db_cpu * per:.2f} ms; {self.connections} connections opened"
        )


def parse_wrk(output: str) -> tuple[int, float, float, float, int]:
    """(requests, requests a second, p50 s, p99 s, errors) from wrk's ``--latency`` report."""
    rate, total = _RATE.search(output), _TOTAL.search(output)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    percentiles = {int(p): float(value) * _UNITS[unit] for p, value, unit in _PERCENTILE.findall(output)}
    errors = sum(int(n) for n in _NON_2XX.findall(output))
    socket_errors = _SOCKET_ERRORS.search(output)
    if socket_errors is not None:
        errors += sum(int(n) for n in socket_errors.groups())
    return int(total.group(1)), float(rate.group(1)), percentiles[50], percentiles[99], errors


@dataclass(frozen=True)
class Load:
    wrk: str
    base_url: str
    script: Path  # adds the Authorization header
    threads: int
    connections: int

    def run(self, path: str, *, seconds: int, meter: CpuMeter) -> Run:
        args = [
            self.wrk,
            f"--threads={self.threads}",
            f"--connections={self.connections}",
            f"--duration={seconds}s",
            "--latency",
            f"--script={self.script}",
            self.base_url + path,
        ]
        before = meter.snapshot()
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        after = meter.snapshot()
        requests, rate, p50, p99, errors = parse_wrk(done.stdout)
        return Run(
            requests=requests,
            rate=rate,
            p50=p50,
            p99=p99,
            errors=errors,
            api_cpu=spent(before[0], after[0]),
            db_cpu=spent(before[1], after[1]),
            connections=after[2] - before[2],
        )


def check_answers(base_url: str, token: str) -> None:
    """The routes answer what they should before any load: a load of 401s or 404s measures nothing."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        health = client.get(HEALTH_PATH)
        cluster = client.get(CLUSTER_PATH, headers={"Authorization": f"Bearer {token}"})
        refused = client.get(CLUSTER_PATH)
    if health.status_code != 200 or cluster.status_code != 200 or cluster.json().get("name") != CLUSTER:
        raise RuntimeError(f"unexpected answers: {health.status_code}, {cluster.status_code} {cluster.text}")
    if refused.status_code != 401:
        raise RuntimeError(f"the cluster GET without a token answered {refused.status_code}")


# --- where the time goes: py-spy -----------------------------------------------------------------------


@contextmanager
def profiled(pids: list[int], *, seconds: int, workdir: Path) -> Iterator[list[Path]]:
    """py-spy samples every API process (threads that run Python, not idle ones) for ``seconds``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    outputs = [workdir / f"profile-{pid}.txt" for pid in pids]
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                f"--duration={seconds}",
                "--rate=250",
                "--nonblocking",
                "--gil",
                "--function",
                "--format=raw",
                f"--output={output}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, output in zip(pids, outputs, strict=True)
    ]
    try:
        yield outputs
    finally:
        for spy_process in spies:
            spy_process.wait(timeout=seconds + 30)


def _frame_name(frame: str) -> str:
    # py-spy's raw frames read "function (path/module.py:line)"
    function, _, where = frame.partition(" (")
    return f"{where.split(':', 1)[0]}:{function}"


def print_profile(outputs: list[Path], *, top: int) -> None:
    """The functions the API processes spent their samples in: inclusive (on the stack) and self (on top)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for output in outputs:
        if not output.exists():
            continue
        for line in output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = [_frame_name(frame) for frame in stack.split(";")]
            for name in set(frames):
                inclusive[name] = inclusive.get(name, 0) + count
            own[frames[-1]] = own.get(frames[-1], 0) + count
    if total == 0:
        print("profile: no samples (is py-spy allowed to attach?)")
        return
    print(f"profile of the cluster GET ({total} samples, API processes):")
    print("  inclusive:")
    for name, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {name}")
    print("  self:")
    for name, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"    {100 * count / total:5.1f} %  {name}")


# --- the measurement ------------------------------------------------------------------------------------


def verdict(rounds: list[tuple[Run, Run]]) -> bool:
    rate = statistics.median(cluster.rate for _, cluster in rounds)
    p99 = statistics.median(cluster.p99 for _, cluster in rounds)
    ratio = statistics.median(cluster.rate / health.rate for health, cluster in rounds)
    errors = sum(health.errors + cluster.errors for health, cluster in rounds)
    checks = [
        (f"cluster GET {rate:.0f} req/s (target ≥ {TARGET_RATE:.0f})", rate >= TARGET_RATE),
        (
            f"cluster GET p99 {p99 * 1000:.1f} ms (target ≤ {TARGET_P99_SECONDS * 1000:.0f})",
            p99 <= TARGET_P99_SECONDS,
        ),
        (f"cluster GET / healthz {ratio:.2f} (target ≥ {TARGET_RATIO})", ratio >= TARGET_RATIO),
        (f"errors {errors} (target 0)", errors == 0),
    ]
    print("median round:")
    for text, ok in checks:
        print(f"  {'met   ' if ok else 'MISSED'} {text}")
    health_rate = statistics.median(health.rate for health, _ in rounds)
    health_p99 = statistics.median(health.p99 for health, _ in rounds)
    record(
        Row(
            key="api.get.rate",
            label="authenticated cluster GET req/s / /healthz",
            ours=rate,
            baseline=health_rate,
            unit="req/s",
            goal=f"≥ {TARGET_RATE:,.0f}, ≥ {TARGET_RATIO}x",
            met=rate >= TARGET_RATE and ratio >= TARGET_RATIO and errors == 0,
            detail=f"{errors} errors; 50 connections, wrk",
        ),
        Row(
            key="api.get.p99",
            label="authenticated cluster GET p99 / /healthz's",
            ours=p99 * 1000,
            baseline=health_p99 * 1000,
            unit="ms",
            goal=f"≤ {TARGET_P99_SECONDS * 1000:.0f} ms",
            met=p99 <= TARGET_P99_SECONDS,
        ),
    )
    return all(ok for _, ok in checks)


def run(
    sizes: Sizes,
    *,
    processes: int,
    threads: int,
    connections: int,
    profile: int,
    settings: dict[str, str],
    workdir: Path,
) -> bool:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    with ExitStack() as stack:
        db_url = stack.enter_context(database())
        stack.enter_context(redis_db())
        upgrade_database(db_url)
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        token = seed(engine)

        port = free_port()
        env = {**api_env(db_url), **settings}
        command = [sys.executable, "-m", "kaas_cli.main", "api", "--port", str(port), "--reuse-port"]
        logs = [workdir / f"api-{index}.log" for index in range(processes)]
        procs = [stack.enter_context(process(command, env=env, log=log)) for log in logs]
        wait_listening(procs, port=port, logs=logs)
        base_url = f"http://127.0.0.1:{port}"
        check_answers(base_url, token)

        script = workdir / "auth.lua"
        script.touch(mode=0o600)
        script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        load = Load(wrk=wrk, base_url=base_url, script=script, threads=threads, connections=connections)
        meter = CpuMeter(api_pids=[p.pid for p in procs], engine=engine, db_name=db_url.rsplit("/", 1)[1])

        print(
            f"{processes} x kaas api --reuse-port (PostgreSQL, production settings), wrk {threads} threads"
            f" {connections} connections, {sizes.rounds} x {sizes.seconds} s a route after"
            f" {sizes.warmup_seconds} s of warm-up; logs in {workdir}",
            flush=True,
        )
        load.run(HEALTH_PATH, seconds=sizes.warmup_seconds, meter=meter)
        load.run(CLUSTER_PATH, seconds=sizes.warmup_seconds, meter=meter)
        rounds: list[tuple[Run, Run]] = []
        for index in range(sizes.rounds):
            health = load.run(HEALTH_PATH, seconds=sizes.seconds, meter=meter)
            cluster = load.run(CLUSTER_PATH, seconds=sizes.seconds, meter=meter)
            rounds.append((health, cluster))
            print(f"round {index + 1}:")
            print(health.line("/healthz"))
            print(cluster.line("cluster GET"))
            print(f"  cluster GET / healthz: {cluster.rate / health.rate:.2f}", flush=True)
        check_answers(base_url, token)
        met = verdict(rounds)
        if profile:
            # after the measured rounds: py-spy's sampling costs CPU the figures above must not pay
            with profiled(meter.api_pids, seconds=sizes.seconds, workdir=workdir) as outputs:
                load.run(CLUSTER_PATH, seconds=sizes.seconds, meter=meter)
            print_profile(outputs, top=profile)
        return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 s warm-up, one round of 5 s a route")
    parser.add_argument("--rounds", type=int, help="measured rounds (default 2; 1 with --quick)")
    parser.add_argument("--seconds", type=int, help="seconds a route per round (default 20; 5 with --quick)")
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="kaas api processes (default: one a core)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after the rounds, one more cluster GET run under py-spy; print its N top functions",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KAAS_NAME=VALUE",
        help="a setting of the API processes over the production ones, to see what it costs (repeatable)",
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        warmup_seconds=base.warmup_seconds,
        seconds=args.seconds or base.seconds,
        rounds=args.rounds or base.rounds,
    )
    # SIGTERM unwinds like Ctrl-C, so every process and the database are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="kaas-bench-api-"))
    try:
        met = run(
            sizes,
            processes=args.processes,
            threads=args.threads,
            connections=args.connections,
            profile=args.profile,
            settings=settings,
            workdir=workdir,
        )
    except KeyboardInterrupt:
        print(f"interrupted; everything stopped and cleaned up (logs: {workdir})", file=sys.stderr)
        sys.exit(130)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
