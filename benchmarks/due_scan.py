"""Due-scan benchmark: what one region's due-scan costs the database with N clusters.

Real PostgreSQL, a migrated database of its own, N clusters in the scanned region and as many in another
one, none of them due (as converged clusters are between their checks). Times
``provider.reconciler.due.claim_due_clusters`` when nothing is due (the common case: one scan every 5 s per
region), when ``--due`` clusters are (each scan claims them, then they are pushed a grace ahead; the
benchmark makes them due again between runs), and the same two without the index on
``(region_id, next_reconcile_at)``. Prints the medians and PostgreSQL's plan of the claim.

    .venv/bin/python benchmarks/due_scan.py --clusters 1000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.models import Cluster, Project, Region, utcnow  # noqa: E402
from kaas_core.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from provider.reconciler.due import claim_due_clusters  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
INDEX = "ix_clusters_region_id_next_reconcile_at"


@contextmanager
def database() -> Iterator[str]:
    name = f"kaas_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def populate(engine: sa.Engine, n: int) -> None:
    factory = make_session_factory(engine)
    rng = random.Random(7)
    now = utcnow()
    with session_scope(factory) as session:
        project = Project(name="bench")
        session.add(project)
        regions = [Region(name=name, cloud="sim") for name in ("scanned", "other")]
        session.add_all(regions)
        session.flush()
        for region in regions:
            for i in range(n):
                session.add(
                    Cluster(
                        project_id=project.id,
                        region_id=region.id,
                        name=f"{region.name}-{i:05d}",
                        kubernetes_version="1.31.4",
                        control_plane_count=1,
                        control_plane_flavor="m1.small",
                        node_cidr="10.0.0.0/24",
                        pod_cidr="10.244.0.0/16",
                        service_cidr="10.96.0.0/12",
                        phase="running",
                        # not due while the benchmark runs: only make_due's clusters are
                        next_reconcile_at=now + timedelta(hours=1, seconds=rng.uniform(0, 30)),
                    )
                )
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE clusters"))


def make_due(engine: sa.Engine, count: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE clusters SET next_reconcile_at = now() - interval '1 second' WHERE id IN"
                " (SELECT c.id FROM clusters c JOIN regions r ON r.id = c.region_id"
                "  WHERE r.name = 'scanned' ORDER BY c.name LIMIT :count)"
            ),
            {"count": count},
        )


def time_scans(engine: sa.Engine, *, due: int, rounds: int) -> tuple[float, int]:
    """Median milliseconds of one claim, and how many clusters the last one claimed."""
    factory = make_session_factory(engine)
    samples = []
    claimed = 0
    for _ in range(rounds):
        if due:
            make_due(engine, due)
        started = time.perf_counter()
        claimed = len(claim_due_clusters(factory, "scanned", now=utcnow(), grace_seconds=10))
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), claimed


def plan(engine: sa.Engine) -> str:
    """PostgreSQL's plan of the claim's row selection (EXPLAIN of the same query, nothing claimed)."""
    with engine.connect() as conn:
        region_id = conn.execute(sa.text("SELECT id FROM regions WHERE name = 'scanned'")).scalar_one()
        rows = conn.execute(
            sa.text(
                "EXPLAIN ANALYZE SELECT id FROM clusters WHERE region_id = :region"
                " AND next_reconcile_at <= now() AND paused IS false AND phase <> 'deleted'"
                " AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())"
                " ORDER BY next_reconcile_at LIMIT 500 FOR UPDATE SKIP LOCKED"
            ),
            {"region": region_id},
        ).all()
    return "\n".join(f"    {r[0]}" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, default=1000, help="clusters per region (two regions)")
    parser.add_argument("--due", type=int, default=20, help="clusters due at each scan of the busy case")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with database() as url:
        upgrade_database(url)
        engine = make_engine(url)
        try:
            populate(engine, args.clusters)
            print(f"due-scan of one region: {args.clusters} clusters in it, {args.clusters} in another")
            for label in ("with the index", "without the index"):
                idle, _ = time_scans(engine, due=0, rounds=args.rounds)
                busy, claimed = time_scans(engine, due=args.due, rounds=args.rounds)
                print(f"  {label:<18} nothing due: {idle:6.2f} ms   {claimed} due: {busy:6.2f} ms (median)")
                if label == "with the index":
                    print(plan(engine))
                    with engine.begin() as conn:
                        conn.execute(sa.text(f"DROP INDEX {INDEX}"))
                        conn.execute(sa.text("ANALYZE clusters"))
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
