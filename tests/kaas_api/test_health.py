"""Liveness and readiness."""

from __future__ import annotations

from fastapi.testclient import TestClient

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_core.db.session import make_engine, make_session_factory
from tests.kaas_api.conftest import RecordingDispatcher


def test_healthz_answers_without_dependencies(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(client: TestClient, dispatcher: RecordingDispatcher) -> None:
    assert client.get("/readyz").status_code == 200
    dispatcher.healthy = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == {
        "checks": {"database": "ok", "broker": "failed"},
        "failed": ["broker"],
    }


def test_readyz_reports_an_unreachable_database(settings: ApiSettings) -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    app = create_app(settings, session_factory=make_session_factory(engine), dispatcher=RecordingDispatcher())
    try:
        with TestClient(app) as client:
            response = client.get("/readyz")
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.json()["detail"]["failed"] == ["database"]


def test_openapi_has_examples_on_request_schemas(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in (
        "ClusterCreate",
        "NodePoolCreate",
        "ProjectCreate",
        "RegionCreate",
        "UserCreate",
        "TokenCreate",
    ):
        assert schemas[name].get("examples"), name
