"""Beat's regional dispatch: each region's due-scan and leak sweep reach that region's own queue, for every
region in the database, and the due-scan alone brings a cluster nobody sent a message for to running."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import ClusterPhase, Region
from kaas_core.db.session import session_scope
from provider import beat as provider_beat
from provider.beat import RegionalScheduler, regional_entries
from provider.celery_app import ProviderCelery, make_celery, run_embedded_worker, worker_queues
from provider.config import ProviderSettings
from simcloud.testing import SimCloudHandle
from tests.provider.factories import PoolSpec, create_cluster, ensure_region
from tests.provider.harness import make_context
from tests.provider.test_tasks import wait_for_phase

pytestmark = pytest.mark.redis

FAST_BEAT = {"due_scan_interval_seconds": 0.2, "sweep_interval_seconds": 0.3}


@pytest.fixture
def regions(session_factory: sessionmaker[Session]) -> list[str]:
    names = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    with session_scope(session_factory) as session:
        for name in names:
            ensure_region(session, name=name)
    return sorted(names)


@pytest.fixture
def beat_app(session_factory: sessionmaker[Session], redis_url: str) -> Iterator[ProviderCelery]:
    """An app whose beat serves every region; it consumes nothing (the test reads the queues)."""
    settings = ProviderSettings(broker_url=redis_url, **FAST_BEAT)
    app = make_celery(settings, context=make_context(session_factory, settings.clouds_yaml))
    yield app
    app.close()


def queued_tasks(redis_url: str, queue: str) -> list[tuple[str, list[str]]]:
    """(task name, args) of every message waiting on ``queue`` (kombu keeps a Redis list per queue)."""
    client = redis.Redis.from_url(redis_url)
    try:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()
    result = []
    for message in messages:
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        result.append((message["headers"]["task"], args))
    return result


def tick_until(scheduler: RegionalScheduler, done: Callable[[], bool], *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail("beat did not send what was expected in time")
        time.sleep(min(max(scheduler.tick(), 0.0), 0.05))  # tick() may answer a tiny negative delay


def test_regional_entries_route_each_regions_tasks_to_its_own_queue() -> None:
    entries = regional_entries(ProviderSettings(**FAST_BEAT), ["east", "west"])
    assert {name: (e["task"], e["args"], e["options"]["queue"]) for name, e in entries.items()} == {
        "due-scan:east": ("provider.due_scan", ("east",), "region.east"),
        "sweep-leaks:east": ("provider.sweep_leaks", ("east",), "region.east"),
        "observe:east": ("provider.observe_region", ("east",), "region.east"),
        "due-scan:west": ("provider.due_scan", ("west",), "region.west"),
        "sweep-leaks:west": ("provider.sweep_leaks", ("west",), "region.west"),
        "observe:west": ("provider.observe_region", ("west",), "region.west"),
    }
    # a queue nobody consumed for a while holds no pile of stale scans: each expires after its interval
    assert entries["due-scan:east"]["options"]["expires"] == 0.2


def test_beat_sends_every_regions_due_scan_and_leak_sweep_to_that_regions_queue(
    beat_app: ProviderCelery, regions: list[str], redis_url: str
) -> None:
    scheduler = RegionalScheduler(app=beat_app)

    def every_region_got_both() -> bool:
        for name in regions:
            tasks = queued_tasks(redis_url, f"region.{name}")
            if ("provider.due_scan", [name]) not in tasks or ("provider.sweep_leaks", [name]) not in tasks:
                return False
        return True

    tick_until(scheduler, every_region_got_both)
    for name in regions:  # nothing of one region lands on another's queue
        assert {args[0] for _, args in queued_tasks(redis_url, f"region.{name}")} == {name}
    assert ("provider.due_scan", [regions[0]]) not in queued_tasks(redis_url, "provider")


def test_a_region_created_or_removed_later_changes_beats_entries_without_a_restart(
    beat_app: ProviderCelery,
    regions: list[str],
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provider_beat, "REGION_REFRESH_SECONDS", 0.0)
    scheduler = RegionalScheduler(app=beat_app)
    assert {n for n in scheduler.schedule if n.startswith("due-scan:")} == {f"due-scan:{r}" for r in regions}
    with session_scope(session_factory) as session:
        ensure_region(session, name="later")
        session.execute(delete(Region).where(Region.name == regions[0]))
    scheduler.tick()
    assert {n for n in scheduler.schedule if n.startswith("due-scan:")} == {
        f"due-scan:{r}" for r in [*regions[1:], "later"]
    }
    assert "sweep-leaks:later" in scheduler.schedule
    assert "provider-sweep" in scheduler.schedule


def test_a_cluster_nobody_sent_a_message_for_runs_through_beats_due_scan(
    session_factory: sessionmaker[Session], simcloud: SimCloudHandle, redis_url: str, region: str
) -> None:
    """Worker and beat as ``kaas up`` runs them: the row's due time is all the cluster needs."""
    settings = ProviderSettings(broker_url=redis_url, regions=[region], **FAST_BEAT)
    app = make_celery(settings, context=make_context(session_factory, simcloud.clouds_yaml))
    created = create_cluster(session_factory, region=region, pools=(PoolSpec(count=1),))
    handle = run_embedded_worker(app, queues=worker_queues([region]), concurrency=2, beat=True)
    try:
        wait_for_phase(session_factory, created.id, ClusterPhase.RUNNING)
    finally:
        handle.stop()
        app.close()
