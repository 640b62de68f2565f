"""Upgrade benchmark: how long kaas takes to upgrade a 3+10-node cluster on simcloud, and where the time goes.

    .venv/bin/python benchmarks/upgrade.py [--workers 10] [--max-surge 1]

Real: the reconcile passes (``provider.reconciler.reconcile_cluster_once``, the rollout planner, the steps),
PostgreSQL, and the simulated OpenStack's HTTP APIs through openstacksdk, with zero boot delay. The far end
is the cluster double of the tests (``tests/provider/rollout/doubles.py``): every ACTIVE server's node is
reported Ready after each pass and a drain finishes in one round, so the figures are kaas's own work, not
kubeadm's, a kubelet's or a PDB's. Passes run back to back: a deployment adds its poll interval
(``KAAS_POLL_INTERVAL_SECONDS``, 2 s) between two passes that wait, so the benchmark also prints the number
of passes that waited.

Baseline, measured in the same run: creating the same cluster from nothing. Prints the upgrade's time and
its ratio to the baseline, the passes, and the time by part: each cloud call (by method), the database
(everything of a pass that is not a cloud call) and the rest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from benchmarks.control_plane import database  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.models import Cluster as ClusterRow  # noqa: E402
from kaas_core.db.models import (  # noqa: E402
    ClusterAgent,
    Node,
    NodePool,
    Operation,
    OperationKind,
    Region,
    utcnow,
)
from kaas_core.db.session import make_engine, make_session_factory  # noqa: E402
from provider.cloud.driver import CloudDriver  # noqa: E402
from provider.reconciler.context import ProviderContext, ReconcileLimits  # noqa: E402
from provider.reconciler.reconcile import reconcile_cluster_once  # noqa: E402
from simcloud.testing import run_simcloud  # noqa: E402
from tests.provider.factories import PoolSpec, create_cluster  # noqa: E402
from tests.provider.harness import make_context  # noqa: E402
from tests.provider.rollout.doubles import ClusterDouble  # noqa: E402

OLD, NEW = "1.30.2", "1.31.0"


@dataclass
class Timings:
    """Seconds spent in each cloud method, and calls made."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    @property
    def cloud_total(self) -> float:
        return sum(self.seconds.values())


class TimedDriver:
    """The real driver, each public method timed."""

    def __init__(self, driver: CloudDriver, timings: Timings) -> None:
        self._driver = driver
        self._timings = timings

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._driver, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._timings.seconds[name] += time.perf_counter() - started
                self._timings.calls[name] += 1

        return timed


def report_all_ready(ctx: ProviderContext, cluster_id: str) -> None:
    """What the agent would report with zero boot delay: every node of an ACTIVE server Ready."""
    with ctx.session_factory.begin() as session:
        nodes = session.scalars(select(Node).where(Node.cluster_id == cluster_id)).all()
        agent = session.get(ClusterAgent, cluster_id) or ClusterAgent(cluster_id=cluster_id)
        now = utcnow()
        agent.connected, agent.connected_at, agent.last_seen_at = True, agent.connected_at or now, now
        agent.tunnel_address = "http://127.0.0.1:1"
        agent.nodes = [{"name": n.name, "ready": n.status == "ACTIVE"} for n in nodes]
        agent.nodes_total = len(nodes)
        agent.nodes_ready = sum(1 for n in nodes if n.status == "ACTIVE")
        session.add(agent)


@dataclass
class Run:
    seconds: float
    passes: int
    waited: int  # passes that ended waiting (each costs a poll interval in a deployment)
    cloud: dict[str, float]
    calls: dict[str, int]


def drive(ctx: ProviderContext, cluster_id: str, timings: Timings, *, max_passes: int = 2000) -> Run:
    timings.reset()
    started = time.perf_counter()
    waited = 0
    for count in range(1, max_passes + 1):
        result = reconcile_cluster_once(ctx, cluster_id, worker_id="bench")
        if result.outcome == "converged":
            return Run(
                time.perf_counter() - started, count, waited, dict(timings.seconds), dict(timings.calls)
            )
        if result.outcome in ("failed", "paused"):
            raise RuntimeError(f"{result.outcome}: {result.message}")
        waited += 1
        report_all_ready(ctx, cluster_id)
    raise RuntimeError(f"not converged after {max_passes} passes")


def begin_upgrade(ctx: ProviderContext, cluster_id: str, *, max_surge: int) -> None:
    with ctx.session_factory.begin() as session:
        cluster = session.get_one(ClusterRow, cluster_id)
        cluster.kubernetes_version = NEW
        cluster.generation += 1
        for pool in session.scalars(select(NodePool).where(NodePool.cluster_id == cluster_id)):
            pool.kubernetes_version = NEW
        session.add(
            Operation(
                cluster_id=cluster_id,
                project_id=cluster.project_id,
                kind=OperationKind.UPGRADE.value,
                target_generation=cluster.generation,
                params={"from_version": OLD, "to_version": NEW, "max_surge": max_surge, "max_unavailable": 0},
            )
        )


@contextmanager
def context(database_url: str, state_dir: Path, timings: Timings) -> Iterator[ProviderContext]:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    with run_simcloud(state_dir=state_dir, boot_delay=0.0) as cloud:
        base = make_context(make_session_factory(engine), cloud.clouds_yaml, require_agent=True)
        factory: Callable[[str], CloudDriver] = base.driver_factory
        double = ClusterDouble()
        yield replace(
            base,
            driver_factory=lambda name: TimedDriver(factory(name), timings),  # type: ignore[arg-type,return-value]
            node_ops=double.open,
            limits=ReconcileLimits(poll_interval_seconds=2.0, lease_seconds=60.0),
        )
    engine.dispose()


def breakdown(run: Run) -> str:
    cloud = sum(run.cloud.values())
    lines = [f"    cloud calls {cloud:6.2f} s ({100 * cloud / run.seconds:4.1f} %)"]
    for name, seconds in sorted(run.cloud.items(), key=lambda kv: -kv[1])[:8]:
        lines.append(f"      {name:28} {seconds:6.2f} s  {run.calls[name]:5d} calls")
    rest = run.seconds - cloud
    lines.append(f"    database, planner, steps {rest:6.2f} s ({100 * rest / run.seconds:4.1f} %)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--max-surge", type=int, default=1)
    args = parser.parse_args()
    timings = Timings()
    with database() as url, tempfile.TemporaryDirectory() as tmp, context(url, Path(tmp), timings) as ctx:
        created = create_cluster(
            ctx.session_factory, control_plane_count=3, pools=(PoolSpec(count=args.workers),)
        )
        with ctx.session_factory.begin() as session:
            session.scalars(select(Region)).one().kubernetes_versions = [OLD, NEW]
        create = drive(ctx, created.id, timings)
        begin_upgrade(ctx, created.id, max_surge=args.max_surge)
        upgrade = drive(ctx, created.id, timings)
    nodes = 3 + args.workers
    print(
        f"cluster: 3 control planes + {args.workers} workers, simcloud, zero boot delay, "
        f"max_surge {args.max_surge}"
    )
    print(f"baseline: create {create.seconds:6.2f} s in {create.passes} passes ({create.waited} waited)")
    print(breakdown(create))
    print(
        f"upgrade:         {upgrade.seconds:6.2f} s in {upgrade.passes} passes ({upgrade.waited} waited): "
        f"{upgrade.seconds / create.seconds:.2f}x the create, "
        f"{upgrade.seconds / nodes:.2f} s per node replaced"
    )
    print(breakdown(upgrade))
    poll = 2.0
    print(
        f"with the default poll interval ({poll:.0f} s) between waiting passes, a deployment adds about "
        f"{upgrade.waited * poll:.0f} s to the upgrade "
        f"({(upgrade.seconds + upgrade.waited * poll):.0f} s in all)"
    )


if __name__ == "__main__":
    main()
