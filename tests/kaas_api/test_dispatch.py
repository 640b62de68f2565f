"""Work is queued only after the commit: reconciles are sent once the request's transaction is durable,
never when it rolls back or its commit fails; with Celery on Redis the message lands on the region's queue."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from celery import Celery
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_api.deps import Uow
from kaas_api.dispatch import CeleryDispatcher
from kaas_api.errors import Conflict
from kaas_core.db.models import Cluster, Project
from tests.kaas_api.conftest import RecordingDispatcher, World, build_world, cluster_body


class CommitCheckingDispatcher(RecordingDispatcher):
    """Looks the cluster up in a separate session when asked to send: it must already be committed."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        super().__init__()
        self.session_factory = session_factory
        self.visible_at_send: list[bool] = []

    def send_reconcile(self, cluster_id: str, *, queue: str) -> None:
        with self.session_factory() as session:
            self.visible_at_send.append(session.get(Cluster, cluster_id) is not None)
        super().send_reconcile(cluster_id, queue=queue)


@pytest.mark.committing  # on the one connection of a rolled-back test, uncommitted rows are visible too
def test_reconcile_is_sent_after_the_cluster_is_committed(
    settings: ApiSettings, session_factory: sessionmaker[Session]
) -> None:
    dispatcher = CommitCheckingDispatcher(session_factory)
    app = create_app(settings, session_factory=session_factory, dispatcher=dispatcher)
    with TestClient(app) as client:
        world = build_world(client, session_factory)
        world.call("member", "DELETE", "/v1/projects/alpha/clusters/c1")
    assert dispatcher.visible_at_send == [True, True]
    assert dispatcher.sent == [(world.cluster_id, "region.r1")] * 2


def test_a_refused_request_sends_nothing(world: World, dispatcher: RecordingDispatcher) -> None:
    before = list(dispatcher.sent)
    response = world.call("member", "POST", "/v1/projects/alpha/clusters", cluster_body("c1"))
    assert response.status_code == 409
    scale = {"node_pools": [{"name": "p1", "count": 3}]}
    assert world.call("viewer", "PATCH", "/v1/projects/alpha/clusters/c1", scale).status_code == 403
    assert dispatcher.sent == before


@pytest.fixture
def probe_app(app: FastAPI) -> FastAPI:
    """The app plus two probe routes that ask for a reconcile and then fail: in the endpoint, or at commit."""

    @app.post("/probe/raise-after-asking")
    def raise_after_asking(uow: Uow) -> None:
        uow.reconcile_after_commit("c-raise", queue="region.r1")
        raise Conflict("probe failure")

    @app.post("/probe/commit-fails")
    def commit_fails(uow: Uow) -> dict[str, str]:
        uow.reconcile_after_commit("c-commit", queue="region.r1")
        uow.session.add(Project(name="dup"))
        uow.session.add(Project(name="dup"))  # unique violation only at commit (autoflush is off)
        return {"status": "should not be seen"}

    return app


def test_rollback_drops_requested_reconciles(probe_app: FastAPI, dispatcher: RecordingDispatcher) -> None:
    with TestClient(probe_app) as client:
        response = client.post("/probe/raise-after-asking")
        assert response.status_code == 409
        response = client.post("/probe/commit-fails")
        assert response.status_code == 409
        assert response.json()["error"] == "conflict"
    assert dispatcher.sent == []


@pytest.fixture
def celery_app(redis_url: str) -> Iterator[Celery]:
    app = Celery("kaas-api-test", broker=redis_url)
    yield app
    app.close()


@pytest.mark.redis
def test_celery_dispatcher_puts_the_task_on_the_regions_queue(
    settings: ApiSettings, session_factory: sessionmaker[Session], celery_app: Celery, redis_url: str
) -> None:
    import redis

    dispatcher = CeleryDispatcher(celery_app)
    assert dispatcher.ping()
    app = create_app(settings, session_factory=session_factory, dispatcher=dispatcher)
    with TestClient(app) as client:
        world = build_world(client, session_factory)
    broker = redis.Redis.from_url(redis_url)
    try:
        raw = broker.lrange("region.r1", 0, -1)
    finally:
        broker.close()
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["headers"]["task"] == "provider.reconcile_cluster"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == [world.cluster_id]


def test_celery_dispatcher_ping_fails_without_a_broker() -> None:
    app = Celery("kaas-api-test", broker="redis://127.0.0.1:1/0")
    try:
        assert CeleryDispatcher(app).ping() is False
    finally:
        app.close()
