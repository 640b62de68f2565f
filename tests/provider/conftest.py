"""Fixtures of the provider tests that run the Celery side for real: a simulated cloud, a region with a
queue of its own, and a worker thread consuming it from Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from provider.celery_app import EmbeddedWorker, make_celery, run_embedded_worker, worker_queues
from provider.config import ProviderSettings
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.provider.harness import make_context


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test here commits: the reconciler's lease heartbeat and the Celery workers open sessions in
    threads of their own, and some tests hand the database to a process (tests/conftest.py: committing)."""
    item.add_marker(pytest.mark.committing)


@pytest.fixture
def simcloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "simcloud", boot_delay=0.0) as handle:
        yield handle


@pytest.fixture
def region() -> str:
    return f"sim-{uuid.uuid4().hex[:8]}"  # its own queue: other test runs share the Redis database


@pytest.fixture
def worker(
    session_factory: sessionmaker[Session], simcloud: SimCloudHandle, redis_url: str, region: str
) -> Iterator[EmbeddedWorker]:
    settings = ProviderSettings(broker_url=redis_url, regions=[region], sweep_interval_seconds=3600)
    app = make_celery(settings, context=make_context(session_factory, simcloud.clouds_yaml))
    handle = run_embedded_worker(app, queues=worker_queues([region]), concurrency=2)
    yield handle
    handle.stop()
    app.close()
