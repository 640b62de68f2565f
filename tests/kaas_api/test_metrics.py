"""``/metrics``: only admins and the scrape token read it; requests, clusters, agents and queues show up.

The app runs on the real migrated PostgreSQL (``tests/kaas_api/conftest.py``); the queue-depth tests use the
real Redis. The exposition is parsed with ``prometheus_client.parser``, as Prometheus would read it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_api.regions.service import create_region
from kaas_core.db.models import ClusterAgent
from tests.kaas_api.conftest import REGION, SECRET_KEY, RecordingDispatcher, World, bearer, cluster_body

SCRAPE_TOKEN = "scrape-token-0123456789-abcdefghijklmnopqrstuvwxyz"
CLUSTERS = "/v1/projects/{project}/clusters"


def scrape(client: TestClient, token: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by (sample name, labels)."""
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _labels in samples}


# --- who may scrape -------------------------------------------------------------------------------------


def test_anonymous_and_unknown_tokens_are_refused_with_401(world: World) -> None:
    assert world.client.get("/metrics").status_code == 401
    assert world.client.get("/metrics", headers={"Authorization": "Basic abc"}).status_code == 401
    refused = world.client.get("/metrics", headers=bearer("kaas_not-a-real-token"))
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthenticated"


@pytest.mark.parametrize("who", ["owner", "member", "viewer", "outsider"])
def test_users_who_are_not_admins_are_refused_with_403(world: World, who: str) -> None:
    refused = world.call(who, "GET", "/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"


def test_an_admin_may_scrape(world: World) -> None:
    assert world.call("viewer", "GET", "/v1/projects/alpha").status_code == 200  # a request to count
    assert "kaas_http_requests_total" in names(scrape(world.client, world.tokens["admin"]))


@pytest.fixture
def scrape_token_client(session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    settings = ApiSettings(
        secret_key=SECRET_KEY,
        database_url="postgresql+psycopg://unused/unused",
        metrics_token=SecretStr(SCRAPE_TOKEN),
    )
    app = create_app(settings, session_factory=session_factory, dispatcher=RecordingDispatcher())
    with TestClient(app) as client:
        yield client


def test_the_scrape_token_may_scrape_but_only_exactly(scrape_token_client: TestClient) -> None:
    assert "kaas_clusters" in {
        family.name
        for family in text_string_to_metric_families(
            scrape_token_client.get("/metrics", headers=bearer(SCRAPE_TOKEN)).text
        )
    }
    for wrong in (SCRAPE_TOKEN[:-1], SCRAPE_TOKEN + "x", SCRAPE_TOKEN.upper()):
        assert scrape_token_client.get("/metrics", headers=bearer(wrong)).status_code == 401


def test_the_scrape_token_is_refused_where_no_scrape_token_is_configured(world: World) -> None:
    assert world.client.get("/metrics", headers=bearer(SCRAPE_TOKEN)).status_code == 401


def test_the_scrape_token_is_no_api_token(scrape_token_client: TestClient) -> None:
    assert scrape_token_client.get("/v1/me", headers=bearer(SCRAPE_TOKEN)).status_code == 401


# --- what it shows --------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_method_and_status(world: World) -> None:
    admin = world.tokens["admin"]
    template = "/v1/projects/{project}/clusters/{cluster}"
    before = scrape(world.client, admin)
    assert world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1").status_code == 200
    assert world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1").status_code == 200
    assert world.call("viewer", "GET", "/v1/projects/alpha/clusters/nope").status_code == 404
    assert world.call("viewer", "GET", "/no/such/path").status_code == 404
    after = scrape(world.client, admin)

    def delta(**labels: str) -> float:
        return value(after, "kaas_http_requests_total", **labels) - value(
            before, "kaas_http_requests_total", **labels
        )

    assert delta(route=template, method="GET", status="200") == 2
    assert delta(route=template, method="GET", status="404") == 1
    assert delta(route="unmatched", method="GET", status="404") == 1
    raw_paths = {dict(labels).get("route") for name, labels in after if name == "kaas_http_requests_total"}
    assert "/v1/projects/alpha/clusters/c1" not in raw_paths


def test_every_request_lands_in_the_latency_histogram(world: World) -> None:
    admin = world.tokens["admin"]
    labels = {"route": "/v1/projects/{project}/clusters", "method": "GET"}
    before = scrape(world.client, admin)
    for _ in range(3):
        assert world.call("viewer", "GET", "/v1/projects/alpha/clusters").status_code == 200
    after = scrape(world.client, admin)
    count = "kaas_http_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 3
    total = "kaas_http_request_duration_seconds_sum"
    assert value(after, total, **labels) > value(before, total, **labels)
    assert value(after, "kaas_http_request_duration_seconds_bucket", le="+Inf", **labels) == value(
        after, count, **labels
    )


def test_clusters_by_phase_change_when_a_cluster_is_created(world: World) -> None:
    admin = world.tokens["admin"]
    assert value(scrape(world.client, admin), "kaas_clusters", region="r1", phase="provisioning") == 1
    created = world.call("member", "POST", CLUSTERS.format(project="alpha"), cluster_body("c2"))
    assert created.status_code == 202, created.text
    assert value(scrape(world.client, admin), "kaas_clusters", region="r1", phase="provisioning") == 2


def test_agents_are_counted_connected_and_disconnected(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    created = world.call("member", "POST", CLUSTERS.format(project="alpha"), cluster_body("c2"))
    with session_factory() as session, session.begin():
        session.add(ClusterAgent(cluster_id=world.cluster_id, connected=True))
        session.add(ClusterAgent(cluster_id=created.json()["cluster"]["id"], connected=False))
    samples = scrape(world.client, world.tokens["admin"])
    assert value(samples, "kaas_cluster_agents", region="r1", state="connected") == 1
    assert value(samples, "kaas_cluster_agents", region="r1", state="disconnected") == 1


def test_two_apps_in_one_process_count_separately(
    world: World, settings: ApiSettings, session_factory: sessionmaker[Session]
) -> None:
    other = create_app(settings, session_factory=session_factory, dispatcher=RecordingDispatcher())
    with TestClient(other) as other_client:
        assert other_client.get("/healthz").status_code == 200
        assert other_client.get("/healthz").status_code == 200
        mine = value(
            scrape(world.client, world.tokens["admin"]),
            "kaas_http_requests_total",
            route="/healthz",
            method="GET",
            status="200",
        )
        theirs = value(
            scrape(other_client, world.tokens["admin"]),
            "kaas_http_requests_total",
            route="/healthz",
            method="GET",
            status="200",
        )
    assert (mine, theirs) == (0, 2)


def test_the_memory_broker_reports_no_queue_depth(world: World) -> None:
    samples = scrape(world.client, world.tokens["admin"])
    assert "kaas_queue_depth" not in names(samples)
    assert value(samples, "kaas_metrics_source_up", source="database") == 1


# --- queue depth on Redis -------------------------------------------------------------------------------


@pytest.fixture
def redis_sender(redis_url: str) -> Iterator[Celery]:
    sender = Celery("kaas-metrics-test", broker=redis_url, set_as_current=False)
    yield sender
    sender.close()


def redis_app_client(session_factory: sessionmaker[Session], broker_url: str) -> TestClient:
    settings = ApiSettings(
        secret_key=SECRET_KEY, database_url="postgresql+psycopg://unused/unused", broker_url=broker_url
    )
    return TestClient(create_app(settings, session_factory=session_factory, dispatcher=RecordingDispatcher()))


@pytest.mark.redis
def test_queue_depth_counts_the_messages_waiting_on_each_region_queue(
    world: World, session_factory: sessionmaker[Session], redis_url: str, redis_sender: Celery
) -> None:
    region = f"q-{uuid.uuid4().hex[:8]}"  # its own queue: other test runs share the Redis database
    with session_factory() as session:
        create_region(session, name=region, **REGION)
        session.commit()
    with redis_app_client(session_factory, redis_url) as client:
        assert value(scrape(client, world.tokens["admin"]), "kaas_queue_depth", queue=f"region.{region}") == 0
        for _ in range(3):
            redis_sender.send_task("provider.reconcile_cluster", args=["c"], queue=f"region.{region}")
        samples = scrape(client, world.tokens["admin"])
    assert value(samples, "kaas_queue_depth", queue=f"region.{region}") == 3
    assert value(samples, "kaas_metrics_source_up", source="broker") == 1


def test_an_unreachable_broker_does_not_fail_the_scrape(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    with redis_app_client(session_factory, "redis://127.0.0.1:1/0") as client:
        samples = scrape(client, world.tokens["admin"])
    assert value(samples, "kaas_metrics_source_up", source="broker") == 0
    assert value(samples, "kaas_clusters", region="r1", phase="provisioning") == 1
