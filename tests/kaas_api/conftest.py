"""Fixtures of the API tests: the app on the real migrated PostgreSQL, a recording dispatcher, a populated
world of users with every role.

``RecordingDispatcher`` is a test double of OUR ``TaskDispatcher`` interface (it records what would be
sent); one test in ``test_dispatch.py`` uses the real ``CeleryDispatcher`` on Redis.

The world is built once per session (per xdist worker), committed into a database of its own
(``world_snapshot``); a rolled-back test that asks for ``world`` runs its transaction in that database, so it
starts from the world and leaves it as it was (tests/conftest.py). A committing test builds its world anew
in the empty database, through its own app, as every test once did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.auth.service import issue_token
from kaas_api.config import ApiSettings
from kaas_api.projects.policy import CreationPolicy, ProjectCreation
from kaas_api.projects.service import create_project, set_member
from kaas_api.regions.service import create_region
from kaas_api.users.service import create_user
from kaas_core.credential_cache import RedisRevocationFeed
from kaas_core.db.models import Operation, Region, Role, User
from kaas_core.db.session import make_session_factory
from tests.conftest import Engines, commits, create_migrated_database, drop_pg_database

_T = TypeVar("_T")

SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"
PRINCIPALS = ("admin", "owner", "member", "viewer", "outsider")
UNLIMITED = CreationPolicy(who=ProjectCreation.ANYONE)  # fixtures set up the world, whatever the policy

REGION = {
    "cloud": "os-real-demo",
    "kubernetes_versions": ["1.30.2", "1.29.6"],
    "default_kubernetes_version": "1.30.2",
    "flavors": [
        {"name": "small", "vcpus": 2, "ram_mb": 4096},
        {"name": "large", "vcpus": 8, "ram_mb": 16384},
    ],
}


class RecordingDispatcher:
    """Records reconciles and webhook deliveries instead of sending them; ``healthy`` drives ``ping``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.deliveries: list[str] = []
        self.healthy = True

    def send_reconcile(self, cluster_id: str, *, queue: str) -> None:
        self.sent.append((cluster_id, queue))

    def send_webhook_delivery(self, delivery_id: str) -> None:
        self.deliveries.append(delivery_id)

    def ping(self) -> bool:
        return self.healthy


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


def default_settings() -> ApiSettings:
    return ApiSettings(secret_key=SECRET_KEY, database_url="postgresql+psycopg://unused/unused")


@pytest.fixture
def settings() -> ApiSettings:
    return default_settings()


@pytest.fixture
def app(
    settings: ApiSettings, session_factory: sessionmaker[Session], dispatcher: RecordingDispatcher
) -> FastAPI:
    return create_app(settings, session_factory=session_factory, dispatcher=dispatcher)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cluster_body(name: str = "c1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "region": "r1",
        "control_plane": {"count": 1, "flavor": "small"},
        "node_pools": [{"name": "p1", "flavor": "small", "count": 1}],
    }
    body.update(overrides)
    return body


@dataclass
class World:
    """Users of every role in project ``alpha`` (with cluster ``c1``) and ``empty`` (no clusters);
    regions ``r1`` (in use) and ``spare`` (unused)."""

    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)
    spare_token_ids: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)
    cluster_id: str = ""
    operation_id: str = ""

    def auth(self, who: str) -> dict[str, str]:
        return bearer(self.tokens[who])

    def call(self, who: str | None, method: str, path: str, body: Any = None) -> Any:
        headers = self.auth(who) if who else {}
        return self.client.request(method, path, json=body, headers=headers)


def build_world(client: TestClient, session_factory: sessionmaker[Session]) -> World:
    world = World(client=client)
    with session_factory() as session:
        users: dict[str, User] = {}
        for who in (*PRINCIPALS, "extra"):
            user, token = create_user(session, name=who, is_admin=who == "admin")
            users[who] = user
            world.tokens[who] = token
            world.user_ids[who] = user.id
            spare, _ = issue_token(session, user, description="spare", ttl=timedelta(days=1))
            world.spare_token_ids[who] = spare.id
        for project_name in ("alpha", "empty"):
            project = create_project(session, name=project_name, owner=users["owner"], policy=UNLIMITED)
            set_member(session, project, "member", Role.MEMBER)
            set_member(session, project, "viewer", Role.VIEWER)
            set_member(session, project, "extra", Role.VIEWER)
        create_region(session, name="r1", **REGION)
        create_region(session, name="spare", cloud="os-real-demo")
        session.commit()
    response = client.post("/v1/projects/alpha/clusters", json=cluster_body(), headers=world.auth("owner"))
    assert response.status_code == 202, response.text
    world.cluster_id = response.json()["cluster"]["id"]
    world.operation_id = response.json()["operation"]["id"]
    return world


@dataclass(frozen=True)
class WorldSnapshot:
    """A world committed once into ``database_url``, and what its builder learnt (tokens are never stored)."""

    database_url: str
    built: World

    def world(self, client: TestClient) -> World:
        """The world as seen through ``client`` (the test's own app), with dicts the test may change."""
        return replace(
            self.built,
            client=client,
            tokens=dict(self.built.tokens),
            spare_token_ids=dict(self.built.spare_token_ids),
            user_ids=dict(self.built.user_ids),
        )


@pytest.fixture(scope="session")
def world_snapshot(engines: Engines) -> Iterator[WorldSnapshot]:
    url = create_migrated_database()
    engine = engines.get(url)
    session_factory = make_session_factory(engine)
    app = create_app(default_settings(), session_factory=session_factory, dispatcher=RecordingDispatcher())
    with TestClient(app) as client:
        built = build_world(client, session_factory)
    yield WorldSnapshot(database_url=url, built=built)
    engine.dispose()
    drop_pg_database(url)


@pytest.fixture
def rollback_database_url(request: pytest.FixtureRequest, rollback_database_url: str) -> str:
    """A rolled-back test with a ``world`` starts from the world's database, any other from the empty one."""
    if "world" in request.fixturenames:
        snapshot: WorldSnapshot = request.getfixturevalue("world_snapshot")
        return snapshot.database_url
    return rollback_database_url


@pytest.fixture
def world(
    request: pytest.FixtureRequest, client: TestClient, session_factory: sessionmaker[Session]
) -> World:
    if commits(request):
        return build_world(client, session_factory)
    snapshot: WorldSnapshot = request.getfixturevalue("world_snapshot")
    return snapshot.world(client)


# --- a cluster that can be upgraded (tests/kaas_api/test_upgrades.py, test_operations_control.py) -------

VERSIONS = ["1.28.9", "1.29.6", "1.29.8", "1.30.2", "1.31.0"]
HA = "/v1/projects/alpha/clusters/ha"


def finish_operations(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        for operation in session.scalars(select(Operation).where(Operation.state == "pending")):
            operation.state = "succeeded"
        session.commit()


@pytest.fixture
def ha(world: World, session_factory: sessionmaker[Session]) -> World:
    """Cluster ``ha``: 3 control-plane nodes at 1.29.6, pools ``p1`` (2) and ``p2`` (1); r1 offers VERSIONS;
    every operation finished."""
    with session_factory() as session:
        region = session.scalar(select(Region).where(Region.name == "r1"))
        assert region is not None
        region.kubernetes_versions = VERSIONS
        region.automatic_upgrades = ["1.29.8", "1.30.9"]
        session.commit()
    body = cluster_body(
        "ha",
        kubernetes_version="1.29.6",
        control_plane={"count": 3, "flavor": "small"},
        node_pools=[
            {"name": "p1", "flavor": "small", "count": 2},
            {"name": "p2", "flavor": "small", "count": 1},
        ],
    )
    response = world.call("member", "POST", "/v1/projects/alpha/clusters", body)
    assert response.status_code == 202, response.text
    finish_operations(session_factory)
    return world


def upgrade(world: World, version: str, **strategy: int) -> Any:
    body: dict[str, Any] = {"kubernetes_version": version}
    if strategy:
        body["upgrade_strategy"] = strategy
    return world.call("member", "PATCH", HA, body)


def statements_during(session_factory: sessionmaker[Session], call: Callable[[], _T]) -> tuple[_T, list[str]]:
    """``call()``'s answer, and the SQL statements sent on ``session_factory``'s bind while it ran."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    bind = session_factory.kw["bind"]
    event.listen(bind, "before_cursor_execute", record)
    try:
        answer = call()
    finally:
        event.remove(bind, "before_cursor_execute", record)
    return answer, seen


@pytest.fixture
def api_replicas(world: World, db_engine: Engine, redis_url: str) -> Iterator[list[TestClient]]:
    """Two more API replicas of a committing test's world, each with its own session factory and its own
    Redis revocation feed, as two processes of a deployment."""
    clients: list[TestClient] = []
    try:
        for _ in range(2):
            app = create_app(
                default_settings(),
                session_factory=make_session_factory(db_engine),
                dispatcher=RecordingDispatcher(),
                revocation_feed=RedisRevocationFeed(redis_url),
            )
            client = TestClient(app)
            client.__enter__()
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            feed = client.app.state.kaas.principals.feed  # type: ignore[attr-defined]
            assert client.portal is not None
            client.portal.call(feed.aclose)  # in the loop its subscription runs in
            client.__exit__(None, None, None)
