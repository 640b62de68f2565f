"""Control-plane benchmark: how fast kaas turns N cluster requests into running clusters, and how long one
full reconcile sweep over N clusters takes.

Everything is real except the far end: PostgreSQL, Redis, ``kaas api`` and ``kaas worker`` as separate
processes, the simulated OpenStack (``python -m simcloud``) with zero boot delay in its own process.

    .venv/bin/python benchmarks/control_plane.py --clusters 100
    .venv/bin/python benchmarks/control_plane.py --clusters 100 1000 --workers 2 --concurrency 8

The cloud side only: clusters count as running when their servers are ACTIVE
(``KAAS_REQUIRE_AGENT=false``); no agents boot here. Prints, for each N: requests accepted/second at the
API, clusters/minute from the first request to all running, and the wall time of one full sweep (every
cluster reconciled once more, all converged).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kaas_api.users.service import create_user  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.session import make_engine, make_session_factory, session_scope  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/14"
REGION = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextmanager
def database() -> Iterator[str]:
    name = f"kaas_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def phase_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT phase, count(*) FROM clusters GROUP BY phase")).all()
    return {str(phase): int(count) for phase, count in rows}


def run(n: int, *, workers: int, concurrency: int, workdir: Path, redis_url: str) -> dict[str, float]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    with database() as db_url:
        upgrade_database(db_url)
        engine = make_engine(db_url)
        with session_scope(make_session_factory(engine)) as session:
            _admin, token = create_user(session, name="bench-admin", is_admin=True)

        sim_port, api_port = free_port(), free_port()
        sim_dir = workdir / f"sim-{n}"
        env = {
            **os.environ,
            "KAAS_DATABASE_URL": db_url,
            "KAAS_BROKER_URL": redis_url,
            "KAAS_SECRET_KEY": "benchmark-secret-key-" + "x" * 32,
            "KAAS_CLOUDS_YAML": str(sim_dir / "clouds.yaml"),
            "KAAS_SWEEP_INTERVAL_SECONDS": "3600",  # no resync of converged clusters while it measures
            # the control plane alone: no agents boot here (benchmarks/tunnel.py measures the tunnel)
            "KAAS_REQUIRE_AGENT": "false",
        }
        python = sys.executable
        with (
            process(
                [
                    python,
                    "-m",
                    "simcloud",
                    "--port",
                    str(sim_port),
                    "--state-dir",
                    str(sim_dir),
                    "--boot-delay",
                    "0",
                    "--lb-delay",
                    "0",
                    # one router gateway address per cluster: the default /24 holds about 240
                    "--external-cidr",
                    "172.24.0.0/16",
                ],
                env,
                workdir / f"simcloud-{n}.log",
            ),
            process(
                [python, "-m", "kaas_cli.main", "api", "--port", str(api_port)], env, workdir / f"api-{n}.log"
            ),
        ):
            wait_http(f"http://127.0.0.1:{sim_port}/identity/v3")
            wait_http(f"http://127.0.0.1:{api_port}/healthz")
            worker_procs = [
                process(
                    [
                        python,
                        "-m",
                        "kaas_cli.main",
                        "worker",
                        "--region",
                        REGION,
                        "--concurrency",
                        str(concurrency),
                        "--pool",
                        "threads",
                    ],
                    env,
                    workdir / f"worker-{n}-{i}.log",
                )
                for i in range(workers)
            ]
            stack = [w.__enter__() for w in worker_procs]
            try:
                return measure(
                    n, api=f"http://127.0.0.1:{api_port}", token=token, engine=engine, redis_url=redis_url
                )
            finally:
                for w in worker_procs:
                    w.__exit__(None, None, None)
                del stack
                engine.dispose()


def measure(n: int, *, api: str, token: str, engine: sa.Engine, redis_url: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
        http.post(
            "/v1/regions",
            json={
                "name": REGION,
                "cloud": "sim",
                "kubernetes_versions": ["1.31.4"],
                "default_kubernetes_version": "1.31.4",
                "image": "ubuntu-22.04",
                "external_network": "public",
                "flavors": [{"name": "m1.small", "vcpus": 1, "ram_mb": 2048}],
            },
        ).raise_for_status()
        http.post("/v1/projects", json={"name": "bench"}).raise_for_status()
        http.put(
            "/v1/projects/bench/quota",
            json={
                "max_clusters": None,
                "max_nodes": None,
                "max_vcpus": None,
                "max_ram_mb": None,
            },
        ).raise_for_status()

        started = time.monotonic()
        for i in range(n):
            http.post(
                "/v1/projects/bench/clusters",
                json={
                    "name": f"c{i:05d}",
                    "region": REGION,
                    "control_plane": {"count": 1, "flavor": "m1.small"},
                    "node_pools": [{"name": "workers", "flavor": "m1.small", "count": 2}],
                },
            ).raise_for_status()
        accepted = time.monotonic()
        print(f"  N={n}: {n} requests accepted in {accepted - started:.1f}s", flush=True)

        last_report = 0.0
        while True:
            counts = phase_counts(engine)
            if counts.get("running", 0) >= n:
                break
            if counts.get("error"):
                raise RuntimeError(f"clusters in error: {counts}")
            if time.monotonic() - last_report > 10:
                print(f"    {time.monotonic() - started:6.1f}s {counts}", flush=True)
                last_report = time.monotonic()
            if time.monotonic() - started > 3600:
                raise RuntimeError(f"not all running after an hour: {counts}")
            time.sleep(0.5)
        all_running = time.monotonic()

    # one full sweep: every cluster due at once (as after an upgrade), the region's due-scan sent every
    # second as beat would (beat itself does not run here), until every cluster was reconciled once more
    sweep_started_at = datetime.now(UTC)
    sweep_started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE clusters SET next_reconcile_at = now()"))
    client = Celery("bench", broker=redis_url)
    last_scan = 0.0
    while True:
        if time.monotonic() - last_scan >= 1.0:
            client.send_task("provider.due_scan", args=[REGION], queue=f"region.{REGION}")
            last_scan = time.monotonic()
        with engine.connect() as conn:
            behind = conn.execute(
                sa.text(
                    "SELECT count(*) FROM clusters"
                    " WHERE last_reconciled_at IS NULL OR last_reconciled_at < :t"
                ),
                {"t": sweep_started_at},
            ).scalar_one()
        if behind == 0:
            break
        if time.monotonic() - sweep_started > 1800:
            raise RuntimeError(f"sweep incomplete after 30 minutes: {behind} clusters behind")
        time.sleep(0.2)
    sweep_done = time.monotonic()
    client.close()
    return {
        "clusters": n,
        "accept_per_second": n / max(accepted - started, 1e-9),
        "seconds_to_all_running": all_running - started,
        "clusters_per_minute": n / (all_running - started) * 60,
        "sweep_seconds": sweep_done - sweep_started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, nargs="+", default=[100])
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker process")
    parser.add_argument("--redis-url", default=REDIS, help="a Redis database of its own: it is flushed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaas-bench-") as tmp:
        results = []
        for n in args.clusters:
            print(
                f"benchmark: {n} clusters (1 control plane + 2 workers each),"
                f" {args.workers} worker process(es)"
                f" x {args.concurrency} threads",
                flush=True,
            )
            results.append(
                run(
                    n,
                    workers=args.workers,
                    concurrency=args.concurrency,
                    workdir=Path(tmp),
                    redis_url=args.redis_url,
                )
            )
        print()
        print(
            f"{'clusters':>8} {'accept/s':>9} {'to running (s)':>15} {'clusters/min':>13} {'sweep (s)':>10}"
        )
        for r in results:
            print(
                f"{r['clusters']:>8.0f} {r['accept_per_second']:>9.1f} {r['seconds_to_all_running']:>15.1f}"
                f" {r['clusters_per_minute']:>13.1f} {r['sweep_seconds']:>10.2f}"
            )


if __name__ == "__main__":
    main()
