"""Headers that protect browsers, on every response: HSTS over HTTPS, and the dashboard's policy on every
``/admin`` response, pages, 303 redirects, error pages and unhandled errors alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kaas_api.security_headers import DASHBOARD_HEADERS, HSTS_VALUE
from tests.kaas_api.conftest import World

OWN_ORIGIN = "http://testserver"


def assert_dashboard_headers(response: object, *, cache: str = "no-store") -> None:
    headers = response.headers  # type: ignore[attr-defined]
    for name, value in DASHBOARD_HEADERS.items():
        assert headers.get(name) == value, (name, response)
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == cache


@pytest.fixture
def https_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as client:
        yield client


def test_every_https_response_carries_hsts(https_client: TestClient, world: World) -> None:
    bearer = {"Authorization": f"Bearer {world.tokens['owner']}"}
    responses = [
        https_client.get("/healthz"),
        https_client.get("/v1/projects", headers=bearer),
        https_client.get("/v1/projects"),  # 401
        https_client.get("/v1/projects/nothere", headers=bearer),  # 404
        https_client.get("/no/such/route"),
        https_client.post("/v1/projects", json={"name": "Bad Name"}, headers=bearer),  # 422
        https_client.get("/admin", follow_redirects=False),  # 303
        https_client.get("/admin/login"),
    ]
    for response in responses:
        assert response.headers.get("strict-transport-security") == HSTS_VALUE, response.request.url


def test_plain_http_responses_carry_no_hsts(world: World) -> None:
    assert "strict-transport-security" not in world.client.get("/healthz").headers
    assert "strict-transport-security" not in world.client.get("/admin/login").headers


def test_every_kind_of_dashboard_response_carries_the_security_headers(world: World) -> None:
    client = world.client
    login_page = client.get("/admin/login")
    assert login_page.status_code == 200
    assert_dashboard_headers(login_page)
    redirect = client.get("/admin/clusters", follow_redirects=False)
    assert redirect.status_code == 303
    assert_dashboard_headers(redirect)
    unknown = client.get("/admin/no-such-page")
    assert unknown.status_code == 404
    assert_dashboard_headers(unknown)

    csrf = login_page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    logged_in = client.post(
        "/admin/login",
        data={"token": world.tokens["admin"], "csrf_token": csrf},
        headers={"Origin": OWN_ORIGIN},
        follow_redirects=False,
    )
    assert logged_in.status_code == 303
    assert_dashboard_headers(logged_in)
    missing = client.get("/admin/clusters/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert "<html" in missing.text.lower()
    assert_dashboard_headers(missing)
    invalid = client.get("/admin/clusters?page=0")  # 422, rendered as an error page
    assert invalid.status_code == 422
    assert_dashboard_headers(invalid)
    forged = client.post(
        f"/admin/clusters/{world.cluster_id}/pause", data={"csrf_token": "x"}, headers={"Origin": OWN_ORIGIN}
    )
    assert forged.status_code == 403
    assert_dashboard_headers(forged)
    cross_origin = client.post(f"/admin/clusters/{world.cluster_id}/pause", data={"csrf_token": "x"})
    assert cross_origin.status_code == 403
    assert_dashboard_headers(cross_origin)


def test_the_dashboards_static_files_keep_their_own_caching(world: World) -> None:
    response = world.client.get("/admin/static/dashboard.css")
    assert response.status_code == 200
    assert_dashboard_headers(response, cache="max-age=300")


def test_an_unhandled_error_still_answers_with_the_headers(app: FastAPI) -> None:
    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/admin/boom", boom, include_in_schema=False)
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as client:
        response = client.get("/admin/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["strict-transport-security"] == HSTS_VALUE
    assert_dashboard_headers(response)


def test_api_responses_over_plain_http_are_left_alone(world: World) -> None:
    response = world.call("owner", "GET", "/v1/projects")
    assert "content-security-policy" not in response.headers
    assert "strict-transport-security" not in response.headers
