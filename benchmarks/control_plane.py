"""Control-plane benchmark: how fast kaas turns N cluster requests into running clusters, and how long one
reconcile sweep over a region's clusters takes.

Everything is real except the far end: PostgreSQL, Redis, ``kaas api`` and ``kaas worker`` as separate
processes, the simulated OpenStack (``python -m simcloud``) with zero boot delay in its own process.

    .venv/bin/python benchmarks/control_plane.py --quick
    .venv/bin/python benchmarks/control_plane.py --clusters 1000 --workers 2
    .venv/bin/python benchmarks/control_plane.py --clusters 1000 --workers 2 --sweep-clusters 10000

The cloud side only: clusters count as running when their servers are ACTIVE
(``KAAS_REQUIRE_AGENT=false``); no agents boot here. Two rows:

- **to running**: N clusters requested through the API, from the first request until all are running, with
  W worker processes.
- **sweep**: one reconcile sweep over S running clusters by the bulk observation (``provider.observe_region``
  through a worker: openstacksdk over HTTP to simcloud, PostgreSQL), against a baseline measured in the same
  run: the per-cluster sweep (every one of the N clusters made due at once, each given a full pass by the
  due-scan), extrapolated linearly to S. The S - N clusters beyond the N created are seeded in bulk: their
  database rows copied from a created cluster's, their cloud resources cloned by simcloud
  (``/_sim/clusters/{id}/clones``), so that the sweep meets S real-looking clusters in both.

The Redis database is ``KAAS_TEST_REDIS_URL`` (else db 14); it is flushed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openstack
import sqlalchemy as sa
from celery import Celery
from openstack.config import loader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._rows import Row, record  # noqa: E402
from kaas_api.users.service import create_user  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.models import Cluster, NodePool  # noqa: E402
from kaas_core.db.session import make_engine, make_session_factory, session_scope  # noqa: E402

SWEEP_TARGET_SECONDS = 30.0  # issue 13: one sweep over 10,000 clusters
CREATE_TARGET_SECONDS = 180.0  # issue 13: 1,000 clusters to running with 2 worker processes
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
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


@dataclass(frozen=True)
class Rig:
    """The running parts one measurement talks to."""

    api: str
    token: str
    engine: sa.Engine
    redis_url: str
    sim_url: str
    clouds_yaml: Path
    worker_logs: list[Path]


def run(
    n: int,
    *,
    sweep_clusters: int,
    workers: int,
    concurrency: int,
    request_threads: int,
    workdir: Path,
    redis_url: str,
) -> dict[str, float]:
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
        simcloud_args = [
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
        ]
        api_args = [python, "-m", "kaas_cli.main", "api", "--port", str(api_port)]
        with (
            process(simcloud_args, env, workdir / f"simcloud-{n}.log"),
            process(api_args, env, workdir / f"api-{n}.log"),
        ):
            wait_http(f"http://127.0.0.1:{sim_port}/identity/v3")
            wait_http(f"http://127.0.0.1:{api_port}/healthz")
            worker_logs = [workdir / f"worker-{n}-{i}.log" for i in range(workers)]
            worker_args = [
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
            ]
            with ExitStack() as stack:
                for log in worker_logs:
                    stack.enter_context(process(worker_args, env, log))
                rig = Rig(
                    api=f"http://127.0.0.1:{api_port}",
                    token=token,
                    engine=engine,
                    redis_url=redis_url,
                    sim_url=f"http://127.0.0.1:{sim_port}",
                    clouds_yaml=sim_dir / "clouds.yaml",
                    worker_logs=worker_logs,
                )
                try:
                    result = {"clusters": float(n), **to_running(n, rig, request_threads=request_threads)}
                    result |= sweeps(n, sweep_clusters, rig)
                    return result
                finally:
                    engine.dispose()


def to_running(n: int, rig: Rig, *, request_threads: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {rig.token}"}
    with httpx.Client(base_url=rig.api, headers=headers, timeout=60) as http:
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

        def create(i: int) -> None:
            http.post(
                "/v1/projects/bench/clusters",
                json={
                    "name": f"c{i:05d}",
                    "region": REGION,
                    "control_plane": {"count": 1, "flavor": "m1.small"},
                    "node_pools": [{"name": "workers", "flavor": "m1.small", "count": 2}],
                },
            ).raise_for_status()

        started = time.monotonic()
        with ThreadPoolExecutor(request_threads) as senders:  # httpx.Client is thread-safe
            list(senders.map(create, range(n)))
        accepted = time.monotonic()
        print(f"  N={n}: {n} requests accepted in {accepted - started:.1f}s", flush=True)

        last_report = last_scan = 0.0
        scans = Celery("bench", broker=rig.redis_url)
        while True:
            if time.monotonic() - last_scan >= 5.0:  # as beat does (KAAS_DUE_SCAN_INTERVAL_SECONDS)
                scans.send_task("provider.due_scan", args=[REGION], queue=f"region.{REGION}")
                last_scan = time.monotonic()
            counts = phase_counts(rig.engine)
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
        scans.close()
    return {
        "accept_per_second": n / max(accepted - started, 1e-9),
        "seconds_to_all_running": all_running - started,
        "clusters_per_minute": n / (all_running - started) * 60,
        "seconds_after_last_request": all_running - accepted,
    }


def per_cluster_sweep(rig: Rig) -> float:
    """The old sweep: every cluster due at once (as after an upgrade), the region's due-scan sent every
    second as beat would (beat itself does not run here), until every cluster had one more full pass."""
    sweep_started_at = datetime.now(UTC)
    sweep_started = time.monotonic()
    with rig.engine.begin() as conn:
        conn.execute(sa.text("UPDATE clusters SET next_reconcile_at = now()"))
    client = Celery("bench", broker=rig.redis_url)
    last_scan = 0.0
    try:
        while True:
            if time.monotonic() - last_scan >= 1.0:
                client.send_task("provider.due_scan", args=[REGION], queue=f"region.{REGION}")
                last_scan = time.monotonic()
            with rig.engine.connect() as conn:
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
    finally:
        client.close()
    return time.monotonic() - sweep_started


OBSERVED = re.compile(
    r"observed region (?P<region>\S+): (?P<clusters>\d+) running cluster\(s\), (?P<drifted>\d+) drifted,"
    r" (?P<queued>\d+) queued, (?P<calls>\d+) cloud call\(s\) in (?P<seconds>[\d.]+)s"
)


def bulk_sweep(rig: Rig, *, clusters: int) -> dict[str, float]:
    """One bulk observation of the region through a worker (``provider.observe_region``): wall time from
    the send until a worker's log says it finished one over ``clusters`` running clusters (a line of an
    observation sent earlier is not taken for it), and what it found. Checks it wrote nothing."""

    def observed() -> list[re.Match[str]]:
        """Every finished observation over ``clusters`` in the workers' logs (whichever worker ran it)."""
        return [
            m
            for log in rig.worker_logs
            for m in OBSERVED.finditer(log.read_text(errors="replace"))
            if int(m["clusters"]) == clusters
        ]

    seen_before = len(observed())
    with rig.engine.connect() as conn:
        stamp_before = conn.execute(
            sa.text("SELECT max(updated_at), sum(reconcile_ticket) FROM clusters")
        ).one()
    client = Celery("bench", broker=rig.redis_url)
    started = time.monotonic()
    try:
        client.send_task("provider.observe_region", args=[REGION], queue=f"region.{REGION}")
        while True:
            found = observed()
            if len(found) > seen_before:
                match = found[-1]  # the one line more: this observation's, in whichever log
                break
            if time.monotonic() - started > 600:
                raise RuntimeError("the bulk observation did not finish within 10 minutes")
            time.sleep(0.1)
    finally:
        client.close()
    wall = time.monotonic() - started
    with rig.engine.connect() as conn:
        stamp_after = conn.execute(
            sa.text("SELECT max(updated_at), sum(reconcile_ticket) FROM clusters")
        ).one()
    return {
        "wall": wall,
        "clusters": float(match["clusters"]),
        "drifted": float(match["drifted"]),
        "calls": float(match["calls"]),
        "task_seconds": float(match["seconds"]),
        "wrote": float(tuple(stamp_before) != tuple(stamp_after)),
    }


def seed_clones(rig: Rig, total: int) -> None:
    """Copy the first created cluster (rows and cloud resources) until the region has ``total`` clusters."""
    with rig.engine.connect() as conn:
        present = conn.execute(sa.text("SELECT count(*) FROM clusters")).scalar_one()
        template = conn.execute(sa.text("SELECT * FROM clusters ORDER BY name LIMIT 1")).mappings().one()
        pools = (
            conn.execute(sa.text("SELECT * FROM node_pools WHERE cluster_id = :c"), {"c": template["id"]})
            .mappings()
            .all()
        )
    wanted = total - int(present)
    if wanted <= 0:
        return
    started = time.monotonic()
    config = loader.OpenStackConfig(config_files=[str(rig.clouds_yaml)], load_envvars=False)
    admin = openstack.connection.Connection(config=config.get_one(cloud="sim-admin"))
    token = admin.auth_token
    admin.close()
    clusters_table, pools_table = Cluster.__table__, NodePool.__table__
    chunk = 500
    with httpx.Client(base_url=rig.sim_url, headers={"X-Auth-Token": token}, timeout=600) as sim:
        for first in range(0, wanted, chunk):
            ids = [str(uuid.uuid4()) for _ in range(min(chunk, wanted - first))]
            sim.post(f"/_sim/clusters/{template['id']}/clones", json={"cluster_ids": ids}).raise_for_status()
            rows = [
                {
                    **template,
                    "id": cluster_id,
                    "name": f"s{first + i:05d}",
                    "agent_token_hash": None,
                    "agent_token_encrypted": None,
                }
                for i, cluster_id in enumerate(ids)
            ]
            pool_rows = [
                {**pool, "id": str(uuid.uuid4()), "cluster_id": cluster_id}
                for cluster_id in ids
                for pool in pools
            ]
            with rig.engine.begin() as conn:
                conn.execute(clusters_table.insert(), rows)
                if pool_rows:
                    conn.execute(pools_table.insert(), pool_rows)
    print(f"  seeded {wanted} more clusters in {time.monotonic() - started:.1f}s", flush=True)


def sweeps(n: int, total: int, rig: Rig) -> dict[str, float]:
    baseline = per_cluster_sweep(rig)
    print(f"  per-cluster sweep over {n} clusters: {baseline:.1f}s", flush=True)
    at_n = bulk_sweep(rig, clusters=n)  # the N clusters just converged again: none may have drifted
    print(f"  bulk observation of {n} clusters: {at_n}", flush=True)
    seed_clones(rig, total)
    at_total = bulk_sweep(rig, clusters=total)
    print(f"  bulk observation of {total} clusters: {at_total}", flush=True)
    return {
        "baseline_sweep_seconds": baseline,
        "bulk_sweep_seconds_at_n": at_n["wall"],
        "sweep_clusters": at_total["clusters"],
        "sweep_seconds": at_total["wall"],
        "sweep_task_seconds": at_total["task_seconds"],
        "sweep_calls": at_total["calls"],
        "sweep_drifted": at_total["drifted"],
        "sweep_wrote": at_total["wrote"],
        "baseline_extrapolated": baseline / n * at_total["clusters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 clusters, a sweep over 200: under a minute")
    parser.add_argument("--clusters", type=int, default=None, help="clusters created through the API")
    parser.add_argument("--sweep-clusters", type=int, default=None, help="clusters the bulk sweep meets")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker process")
    parser.add_argument(
        "--request-threads", type=int, default=1, help="clients sending the create requests at once"
    )
    parser.add_argument("--workdir", type=Path, help="keep the processes' logs here (default: a temp folder)")
    parser.add_argument("--redis-url", default=REDIS, help="a Redis database of its own: it is flushed")
    args = parser.parse_args()
    n = args.clusters or (20 if args.quick else 1000)
    total = max(n, args.sweep_clusters or (200 if args.quick else 10_000))
    with tempfile.TemporaryDirectory(prefix="kaas-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(
            f"benchmark: {n} clusters (1 control plane + 2 workers each) to running, a sweep over {total},"
            f" {args.workers} worker process(es) x {args.concurrency} threads",
            flush=True,
        )
        r = run(
            n,
            sweep_clusters=total,
            workers=args.workers,
            concurrency=args.concurrency,
            request_threads=args.request_threads,
            workdir=workdir,
            redis_url=args.redis_url,
        )
    print()
    print(
        f"to running: {n} clusters with {args.workers} worker(s): {r['seconds_to_all_running']:.1f}s"
        f" ({r['clusters_per_minute']:.1f} clusters/min, {r['accept_per_second']:.1f} requests/s accepted,"
        f" all running {r['seconds_after_last_request']:.1f}s after the last request)"
    )
    print(
        f"sweep: {r['sweep_clusters']:.0f} clusters in {r['sweep_seconds']:.2f}s"
        f" (task {r['sweep_task_seconds']:.2f}s, {r['sweep_calls']:.0f} cloud calls,"
        f" {r['sweep_drifted']:.0f} drifted, database {'written' if r['sweep_wrote'] else 'untouched'});"
        f" baseline per-cluster sweep {r['baseline_sweep_seconds']:.1f}s over {n},"
        f" {r['baseline_extrapolated']:.0f}s extrapolated to {r['sweep_clusters']:.0f}:"
        f" {r['baseline_extrapolated'] / max(r['sweep_seconds'], 1e-9):.0f}x faster"
        f" (bulk over the same {n}: {r['bulk_sweep_seconds_at_n']:.2f}s)"
    )
    accepting = n / max(r["accept_per_second"], 1e-9)
    record(
        Row(
            key="fleet.sweep",
            label=f"one sweep over {r['sweep_clusters']:,.0f} clusters / per-cluster sweep",
            ours=r["sweep_seconds"],
            baseline=r["baseline_extrapolated"],
            unit="s",
            goal="≤ 30 s",
            met=r["sweep_seconds"] <= SWEEP_TARGET_SECONDS and not r["sweep_wrote"],
            detail=(
                f"{r['sweep_calls']:.0f} cloud calls, {r['sweep_drifted']:.0f} drifted, database"
                f" {'written' if r['sweep_wrote'] else 'untouched'}; the per-cluster sweep measured over {n}"
                " and extrapolated"
            ),
        ),
        Row(
            key="fleet.create",
            label=f"{n:,} clusters to running, {args.workers} workers / API intake",
            ours=r["seconds_to_all_running"],
            baseline=accepting,
            unit="s",
            goal="≤ 180 s",
            met=r["seconds_to_all_running"] <= CREATE_TARGET_SECONDS,
            detail=(
                f"the API accepted {r['accept_per_second']:.1f} requests/s; all running"
                f" {r['seconds_after_last_request']:.1f} s after the last request"
            ),
        ),
    )


if __name__ == "__main__":
    main()
