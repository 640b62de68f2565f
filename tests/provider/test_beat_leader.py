"""Beat's leader lease: of several beats only the holder sends; another takes over once the holder is gone,
and a holder that comes back after its lease ran out sends nothing more."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.session import session_scope
from provider.beat import RegionalScheduler
from provider.beat_leader import BeatLeadership, redis_url_of
from provider.celery_app import make_celery
from provider.config import ProviderSettings
from tests.provider.factories import ensure_region
from tests.provider.harness import make_context
from tests.provider.test_beat import FAST_BEAT, queued_tasks

pytestmark = pytest.mark.redis


def test_of_two_beats_only_one_holds_the_lease_and_the_other_takes_it_when_released(redis_url: str) -> None:
    first = BeatLeadership(redis_url, lease_seconds=5)
    second = BeatLeadership(redis_url, lease_seconds=5)
    try:
        assert first.is_leader()
        assert not second.is_leader()
        assert first.is_leader()  # renewed, still the holder
        first.release()
        assert second.is_leader()
    finally:
        second.release()


def test_a_holder_whose_lease_ran_out_finds_another_leader_and_stops(redis_url: str) -> None:
    first = BeatLeadership(redis_url, lease_seconds=2)
    second = BeatLeadership(redis_url, lease_seconds=2)
    try:
        assert first.is_leader()
        deadline = time.monotonic() + 10
        while not second.is_leader():  # the first stopped renewing (paused, cut off): it runs out
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.1)
        assert not first.is_leader()  # back again: someone else leads, it sends nothing
        assert second.is_leader()
    finally:
        first.release()
        second.release()


def test_without_redis_the_only_beat_leads() -> None:
    assert redis_url_of("memory://") is None
    assert BeatLeadership(None, lease_seconds=5).is_leader()


def test_only_the_leading_scheduler_sends(session_factory: sessionmaker[Session], redis_url: str) -> None:
    region = f"r-{uuid.uuid4().hex[:6]}"
    with session_scope(session_factory) as session:
        ensure_region(session, name=region)
    settings = ProviderSettings(broker_url=redis_url, beat_lease_seconds=5, **FAST_BEAT)
    apps = [
        make_celery(settings, context=make_context(session_factory, settings.clouds_yaml)) for _ in range(2)
    ]
    leader, follower = (RegionalScheduler(app=app) for app in apps)
    try:
        assert leader.leadership.is_leader()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            follower.tick()
            time.sleep(0.05)
        assert queued_tasks(redis_url, f"region.{region}") == []  # the follower sent nothing

        deadline = time.monotonic() + 5.0
        while not queued_tasks(redis_url, f"region.{region}"):
            assert time.monotonic() < deadline, "the leader sent nothing"
            leader.tick()
            time.sleep(0.05)
    finally:
        leader.close()
        follower.close()
        for app in apps:
            app.close()
