"""The Celery side for real: Redis broker, a worker thread, tasks sent by name as the API sends them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core import tasks as task_names
from kaas_core.db.models import Cluster, ClusterPhase, Region
from kaas_core.tasks import (
    DELIVER_WEBHOOK_TASK,
    DUE_SCAN_TASK,
    OBSERVE_REGION_TASK,
    RECONCILE_TASK,
    SWEEP_LEAKS_TASK,
    SWEEP_TASK,
)
from provider.celery_app import EmbeddedWorker, make_celery
from provider.config import ProviderSettings
from simcloud.testing import SimCloudHandle
from tests.provider.factories import PoolSpec, create_cluster

pytestmark = pytest.mark.redis


@pytest.fixture
def api_sender(redis_url: str) -> Iterator[Celery]:
    """What the API holds: a bare Celery app that only knows task names."""
    sender = Celery("kaas-api-test", broker=redis_url, set_as_current=False)
    yield sender
    sender.close()


def wait_for_phase(
    session_factory: sessionmaker[Session], cluster_id: str, phase: ClusterPhase, *, timeout: float = 60
) -> Cluster:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_factory() as session:
            cluster = session.get_one(Cluster, cluster_id)
            if cluster.phase == phase.value:
                return cluster
        time.sleep(0.1)
    raise AssertionError(
        f"cluster {cluster_id} did not reach {phase} within {timeout}s (now {cluster.phase})"
    )


def test_a_reconcile_sent_by_name_makes_the_cluster_run(
    session_factory: sessionmaker[Session], worker: EmbeddedWorker, api_sender: Celery, region: str
) -> None:
    created = create_cluster(session_factory, region=region, pools=(PoolSpec(count=1),))
    api_sender.send_task("provider.reconcile_cluster", args=[created.id], queue=f"region.{region}")
    cluster = wait_for_phase(session_factory, created.id, ClusterPhase.RUNNING)
    assert {c["type"]: c["status"] for c in cluster.conditions} == {
        "NetworkReady": "True",
        "ControlPlaneReady": "True",
        "NodesReady": "True",
    }


def test_a_due_scan_sent_by_name_reconciles_a_cluster_whose_message_was_lost(
    session_factory: sessionmaker[Session], worker: EmbeddedWorker, api_sender: Celery, region: str
) -> None:
    created = create_cluster(session_factory, region=region, pools=(PoolSpec(count=1),))  # due, no message
    api_sender.send_task("provider.due_scan", args=[region], queue=f"region.{region}")  # what beat sends
    wait_for_phase(session_factory, created.id, ClusterPhase.RUNNING)


def test_a_region_observation_sent_by_name_repairs_a_server_deleted_behind_kaas_back(
    session_factory: sessionmaker[Session],
    worker: EmbeddedWorker,
    api_sender: Celery,
    region: str,
    simcloud: SimCloudHandle,
) -> None:
    """provider.observe_region on the region's queue (beat sends it there): the running cluster, which has
    no due time, is found drifted and its pass recreates the server."""
    created = create_cluster(session_factory, region=region, pools=(PoolSpec(count=1),))
    api_sender.send_task("provider.reconcile_cluster", args=[created.id], queue=f"region.{region}")
    before = wait_for_phase(session_factory, created.id, ClusterPhase.RUNNING)
    assert before.next_reconcile_at is None
    victim = next(s for s in simcloud.sim.servers() if "-cp-" not in s.name)
    assert simcloud.sim.delete_server(victim.id)
    api_sender.send_task("provider.observe_region", args=[region], queue=f"region.{region}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = [s for s in simcloud.sim.servers() if s.status == "ACTIVE"]
        if len(live) == 2 and victim.id not in {s.id for s in live}:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the deleted server was not recreated: {simcloud.sim.servers()}")
    wait_for_phase(session_factory, created.id, ClusterPhase.RUNNING)


def test_the_sweep_records_each_regions_cloud_capacity(
    session_factory: sessionmaker[Session], worker: EmbeddedWorker, api_sender: Celery, region: str
) -> None:
    """provider.sweep_leaks on the region's queue (beat sends it there) → the cloud's limits on the region."""
    created = create_cluster(session_factory, region=region, pools=(PoolSpec(count=1),))
    api_sender.send_task("provider.reconcile_cluster", args=[created.id], queue=f"region.{region}")
    wait_for_phase(session_factory, created.id, ClusterPhase.RUNNING)
    api_sender.send_task("provider.sweep_leaks", args=[region], queue=f"region.{region}")
    deadline = time.monotonic() + 30
    capacity = None
    while capacity is None and time.monotonic() < deadline:
        with session_factory() as session:
            row = session.scalars(select(Region).where(Region.name == region)).one()
            capacity, observed_at = row.cloud_capacity, row.cloud_capacity_at
        time.sleep(0.1)
    assert capacity is not None, "the sweep did not record the region's capacity"
    assert observed_at is not None
    # the running cluster's two servers (control plane and one node) are in the cloud's count
    assert capacity["instances_used"] == 2
    assert capacity["cores_used"] > 0
    assert capacity["instances_limit"] is None or capacity["instances_limit"] >= 2


def test_the_app_is_configured_for_at_least_once_delivery(redis_url: str) -> None:
    app = make_celery(ProviderSettings(broker_url=redis_url, regions=["a", "b"], sweep_interval_seconds=7))
    try:
        conf = app.conf
        assert conf.task_acks_late is True
        assert conf.worker_prefetch_multiplier == 1
        assert conf.task_reject_on_worker_lost is True
        assert conf.accept_content == ["json"]
        assert [q.name for q in conf.task_queues] == ["provider", "region.a", "region.b"]
        assert conf.beat_schedule["provider-sweep"] == {
            "task": "provider.sweep",
            "schedule": 7.0,
            "options": {"queue": "provider", "expires": 7.0},
        }
        assert conf.beat_scheduler == "provider.beat:RegionalScheduler"
        # recovery never waits for Redis to hand a dead worker's messages back, but live workers' long
        # countdowns must not come back twice
        assert conf.broker_transport_options["visibility_timeout"] == 900.0
        assert {
            "provider.reconcile_cluster",
            "provider.due_scan",
            "provider.sweep",
            "provider.sweep_leaks",
        } <= set(app.tasks)
    finally:
        app.close()


def test_regions_can_be_given_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAAS_REGIONS", "east, west")
    assert ProviderSettings().regions == ["east", "west"]


def test_the_worker_registers_every_task_the_name_table_holds(redis_url: str) -> None:
    """The API sends by the names of ``kaas_core.tasks``; a worker must have a function under each."""
    app = make_celery(ProviderSettings(broker_url=redis_url, regions=["a"]))
    try:
        names = {value for key, value in vars(task_names).items() if key.endswith("_TASK")}
        assert names == {
            RECONCILE_TASK,
            DUE_SCAN_TASK,
            OBSERVE_REGION_TASK,
            SWEEP_TASK,
            SWEEP_LEAKS_TASK,
            DELIVER_WEBHOOK_TASK,
        }
        assert names <= set(app.tasks)
    finally:
        app.close()
