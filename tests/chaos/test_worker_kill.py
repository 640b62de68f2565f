"""Chaos: ``kill -9`` of a real worker process while clusters are in flight; how long until each moves again.

Everything is a real process but the cloud: PostgreSQL, Redis, two ``kaas worker --pool threads`` of one
region and one ``kaas beat`` (whose due-scans are the bound), with simcloud in this process holding every
server in BUILD, so the clusters stay in flight (a pass every ``poll_interval_seconds``) for the whole run.
Each round waits until the victim holds a cluster's lease (it is mid-pass), kills it with SIGKILL, restarts
it as a supervisor would, and measures, for every cluster in flight at the kill, the time from the kill
until a pass started after it (``last_reconciled_at``; ``tests.chaos.recovery``, which the whole chaos
campaign uses too: ``tests.chaos.campaign``). A killed worker takes with it the passes it was running and
every countdown message it had reserved; Redis would hand those back only after its visibility timeout.

Prints p50 and max over all clusters and over those whose lease the victim held, and fails when any
cluster waited longer than ``KAAS_RECOVERY_BOUND_SECONDS``. Longer runs::

    KAAS_CHAOS_KILLS=10 KAAS_CHAOS_CLUSTERS=24 .venv/bin/python -m pytest tests/chaos -m chaos
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, as_utc
from provider.config import ProviderSettings
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.chaos.recovery import KillRecovery, snapshot_before_kill, utc_from_epoch, watch_until_moved
from tests.chaos.rig import KAAS, WORKER, Part, Rig, wait_for
from tests.provider.factories import TEST_SECRET_KEY, PoolSpec, create_cluster

pytestmark = [pytest.mark.chaos, pytest.mark.redis]

KILLS = int(os.environ.get("KAAS_CHAOS_KILLS", "3"))
CLUSTERS = int(os.environ.get("KAAS_CHAOS_CLUSTERS", "12"))


@pytest.fixture
def slow_cloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "simcloud", boot_delay=3600.0) as handle:
        yield handle


@pytest.fixture
def region() -> str:
    return f"chaos-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def rig(
    db_engine: Engine, redis_url: str, slow_cloud: SimCloudHandle, tmp_path: Path, region: str
) -> Iterator[Rig]:
    env = {
        **os.environ,
        "KAAS_DATABASE_URL": db_engine.url.render_as_string(hide_password=False),
        "KAAS_BROKER_URL": redis_url,
        "KAAS_CLOUDS_YAML": str(slow_cloud.clouds_yaml),
        "KAAS_SECRET_KEY": TEST_SECRET_KEY,
        "KAAS_REQUIRE_AGENT": "false",
        "KAAS_LOG_LEVEL": "WARNING",
    }
    rig = Rig(workdir=tmp_path, env=env)
    rig.add(
        Part("worker", [*WORKER, "worker", "--region", region, "--pool", "threads", "--concurrency", "2"])
    )
    rig.add(Part("beat", [*KAAS, "beat"]))
    try:
        yield rig
    finally:
        rig.stop()


def last_passes(session_factory: sessionmaker[Session]) -> dict[str, object]:
    with session_factory() as session:
        rows = session.execute(select(Cluster.id, Cluster.last_reconciled_at)).all()
    return {cluster_id: as_utc(at) for cluster_id, at in rows}


def kill_round(rig: Rig, session_factory: sessionmaker[Session], *, grace: float) -> KillRecovery:
    victim = rig.parts["worker"].running[0]  # the oldest: each in turn
    marker = f"/{victim.pid}/"

    def victim_mid_pass() -> bool:
        with session_factory() as session:
            owners = session.scalars(
                select(Cluster.lease_owner).where(Cluster.lease_owner.is_not(None))
            ).all()
        return any(marker in owner for owner in owners)

    deadline = time.monotonic() + 15
    while not victim_mid_pass() and time.monotonic() < deadline:
        time.sleep(0.005)
    recovery = snapshot_before_kill(
        session_factory, killed_at=utc_from_epoch(time.time()), victim_marker=marker, grace_seconds=grace
    )
    rig.kill(victim)
    rig.start("worker")  # a supervisor restarts it; what the dead one held is gone all the same
    watch_until_moved(session_factory, recovery, timeout=180)
    assert recovery.done, f"clusters never moved again: {recovery.in_flight - recovery.moved_at.keys()}"
    return recovery


def test_clusters_move_again_within_the_bound_after_a_worker_is_killed(
    rig: Rig,
    session_factory: sessionmaker[Session],
    redis_url: str,
    region: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = ProviderSettings()
    bound = settings.recovery_bound_seconds
    ids = [
        create_cluster(
            session_factory,
            name=f"c{i:03d}",
            region=region,
            node_cidr=f"10.{i // 256}.{i % 256}.0/24",
            pools=(PoolSpec(count=1),),
        ).id
        for i in range(CLUSTERS)
    ]
    rig.start("beat")
    rig.start("worker")
    rig.start("worker")
    sender = Celery("chaos-api", broker=redis_url, set_as_current=False)
    try:
        for cluster_id in ids:  # as the API does after its commit
            sender.send_task("provider.reconcile_cluster", args=[cluster_id], queue=f"region.{region}")
    finally:
        sender.close()
    wait_for(
        lambda: all(at is not None for at in last_passes(session_factory).values()),
        what="a first pass of every cluster",
        timeout=120,
    )
    time.sleep(3)  # steady state: every cluster in its countdown chain

    rounds = []
    for _ in range(KILLS):
        rounds.append(kill_round(rig, session_factory, grace=settings.requeue_grace_seconds))
        time.sleep(3)

    every = sorted(s for r in rounds for s in r.seconds_from_kill().values())
    leased = sorted(r.seconds_from_kill()[c] for r in rounds for c in r.leased_by_victim)
    with capsys.disabled():
        print(f"\nworker kill -9, {KILLS} kill(s), {CLUSTERS} clusters in flight, bound {bound:g} s")
        print(f"  every in-flight cluster: p50 {statistics.median(every):5.1f} s  max {max(every):5.1f} s")
        if leased:
            print(
                f"  mid-pass in the victim ({len(leased)}):  p50 {statistics.median(leased):5.1f} s"
                f"  max {max(leased):5.1f} s"
            )
        for number, one in enumerate(rounds, 1):
            print(
                f"  kill {number}: {'mid-pass' if one.leased_by_victim else 'between passes'},"
                f" slowest cluster moved after {max(one.seconds_from_kill().values()):.1f} s"
            )
    assert any(r.leased_by_victim for r in rounds), "no kill caught the victim mid-pass"
    assert max(every) <= bound, f"a cluster waited {max(every):.1f} s after a worker died"
