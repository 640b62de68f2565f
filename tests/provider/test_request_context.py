"""The request id follows the work: a client's X-Request-ID shows up in the JSON log lines of the worker
task the API queued, and of every continuation of that reconcile chain.

Everything real: the API on PostgreSQL, Celery on Redis, an embedded worker reconciling against simcloud,
the process's logs configured by ``configure_logging(json=True)`` into a buffer.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_api.dispatch import CeleryDispatcher
from kaas_api.projects.policy import CreationPolicy
from kaas_api.projects.service import create_project
from kaas_api.users.service import create_user
from kaas_core.db.models import Cluster, ClusterPhase
from kaas_core.logs import configure_logging, unconfigure_logging
from provider.celery_app import EmbeddedWorker
from tests.provider.factories import TEST_SECRET_KEY, create_cluster, ensure_region

pytestmark = pytest.mark.redis


class LogBuffer:
    """The JSON lines the process logged while the test ran."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def json_logs() -> Iterator[LogBuffer]:
    root = logging.getLogger()
    level = root.level
    buffer = LogBuffer()
    configure_logging(json=True, level="INFO", stream=buffer.stream)
    yield buffer
    unconfigure_logging()
    root.setLevel(level)


@pytest.fixture
def api(
    session_factory: sessionmaker[Session], redis_url: str, region: str
) -> Iterator[tuple[TestClient, str]]:
    """The API sending through Celery on Redis, and an admin token; project ``team`` on ``region``."""
    with session_factory() as session:
        admin, token = create_user(session, name="admin", is_admin=True)
        create_project(session, name="team", owner=admin, policy=CreationPolicy())
        ensure_region(session, name=region, cloud="sim")
        session.commit()
    sender = Celery("kaas-api-test", broker=redis_url, set_as_current=False)
    settings = ApiSettings(
        secret_key=TEST_SECRET_KEY, broker_url=redis_url, database_url="postgresql://unused"
    )
    app = create_app(settings, session_factory=session_factory, dispatcher=CeleryDispatcher(sender))
    with TestClient(app) as client:
        yield client, token
    sender.close()


def wait_for_running(session_factory: sessionmaker[Session], cluster_id: str, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_factory() as session:
            if session.get_one(Cluster, cluster_id).phase == ClusterPhase.RUNNING.value:
                return
        time.sleep(0.1)
    raise AssertionError(f"cluster {cluster_id} did not reach running within {timeout}s")


def test_the_clients_request_id_reaches_every_log_line_of_the_reconcile_chain(
    json_logs: LogBuffer,
    api: tuple[TestClient, str],
    worker: EmbeddedWorker,
    session_factory: sessionmaker[Session],
    region: str,
) -> None:
    client, token = api
    request_id = f"test-{uuid.uuid4().hex}"
    response = client.post(
        "/v1/projects/team/clusters",
        json={
            "name": "traced",
            "region": region,
            "control_plane": {"count": 1, "flavor": "m1.small"},
            "node_pools": [{"name": "p1", "flavor": "m1.small", "count": 1}],
        },
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == request_id
    cluster_id = response.json()["cluster"]["id"]
    wait_for_running(session_factory, cluster_id)
    time.sleep(0.2)  # the task logs its outcome after the commit that made the cluster run

    passes = [
        line
        for line in json_logs.lines()
        if line.get("logger") == "provider.tasks" and line["event"].startswith(f"reconcile {cluster_id}")
    ]
    assert len(passes) >= 2, passes  # the first pass, then at least one re-queued continuation
    assert {line.get("request_id") for line in passes} == {request_id}
    assert passes[-1]["event"].startswith(f"reconcile {cluster_id}: converged")
    assert all(line["level"] == "info" and "timestamp" in line for line in passes)


def test_work_without_a_request_gets_a_request_id_of_its_own(
    json_logs: LogBuffer,
    worker: EmbeddedWorker,
    session_factory: sessionmaker[Session],
    redis_url: str,
    region: str,
) -> None:
    cluster_ids = []
    for name in ("gone-1", "gone-2"):  # deleted: one pass each, skipped, no continuation
        created = create_cluster(session_factory, name=name, region=region)
        with session_factory() as session, session.begin():
            session.get_one(Cluster, created.id).phase = ClusterPhase.DELETED.value
        cluster_ids.append(created.id)
    sender = Celery("kaas-beat-test", broker=redis_url, set_as_current=False)
    try:
        for cluster_id in cluster_ids:  # like beat's sweep: no request id on the message
            sender.send_task("provider.reconcile_cluster", args=[cluster_id], queue=f"region.{region}")
    finally:
        sender.close()
    deadline = time.monotonic() + 30
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(lines) < 2:
        time.sleep(0.1)
        lines = [line for line in json_logs.lines() if line.get("logger") == "provider.tasks"]
    assert sorted(line["event"].split()[1].rstrip(":") for line in lines) == sorted(cluster_ids)
    ids = [line.get("request_id") for line in lines]
    assert all(ids)
    assert ids[0] != ids[1]
