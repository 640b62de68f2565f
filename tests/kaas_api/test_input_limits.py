"""The API's body limits and its bounded 422: oversize bodies are refused before authentication, in the
API's error shape (a Kubernetes ``Status`` on the k8s proxy), and a 422 lists a bounded number of problems."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from kaas_api.config import ApiSettings
from tests.kaas_api.conftest import World, bearer

JSON_CAP = 2000
PROXY_CAP = 8000


@pytest.fixture
def settings(settings: ApiSettings) -> ApiSettings:
    return settings.model_copy(
        update={
            "http_max_body_bytes": JSON_CAP,
            "k8s_proxy_max_body_bytes": PROXY_CAP,
            "http_max_json_values": 100,
            "max_validation_errors": 5,
        }
    )


def test_an_unauthenticated_oversize_body_is_refused_with_413_in_the_api_error_shape(
    client: TestClient,
) -> None:
    response = client.post(
        "/v1/projects",
        content=b'{"name": "' + b"x" * JSON_CAP + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": "request_too_large",
        "message": f"the request body is larger than {JSON_CAP} bytes, the limit of this route",
        "detail": {"max_body_bytes": JSON_CAP},
    }


def test_an_oversize_body_of_an_authenticated_caller_is_refused_too(world: World) -> None:
    response = world.client.post(
        "/v1/projects",
        content=b'{"name": "' + b"x" * JSON_CAP + b'"}',
        headers={**world.auth("owner"), "content-type": "application/json"},
    )
    assert response.status_code == 413


def test_the_k8s_proxy_refuses_a_body_over_its_cap_with_a_kubernetes_status(client: TestClient) -> None:
    response = client.post(
        "/k8s/clusters/c1/api/v1/namespaces/default/configmaps", content=b"x" * (PROXY_CAP + 1)
    )
    assert response.status_code == 413
    status = response.json()
    assert status["kind"] == "Status"
    assert status["reason"] == "RequestEntityTooLarge"
    assert str(PROXY_CAP) in status["message"]


def test_the_k8s_proxy_takes_bodies_over_the_json_cap_within_its_own(client: TestClient) -> None:
    response = client.post(
        "/k8s/clusters/c1/api/v1/namespaces/default/configmaps", content=b"x" * (JSON_CAP * 2)
    )
    assert response.status_code == 401  # past the body limit, the proxy's authentication answers
    assert response.json()["kind"] == "Status"


def test_a_422_lists_at_most_the_configured_number_of_problems_and_counts_the_rest(world: World) -> None:
    body = {"name": "fine", **{f"unknown{i}": 0 for i in range(50)}}
    response = world.client.post("/v1/projects", json=body, headers=world.auth("owner"))
    assert response.status_code == 422
    answer = response.json()
    assert answer["error"] == "invalid_input"
    assert len(answer["detail"]) == 5
    assert answer["message"].endswith("; and 45 more problems")


def test_a_json_body_of_more_values_than_allowed_is_refused_before_validation(client: TestClient) -> None:
    body = json.dumps({f"k{i}": 0 for i in range(101)}).encode()
    response = client.post("/v1/projects", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422  # not 401: refused before anything else looks at it
    answer = response.json()
    assert answer["message"] == "the JSON body holds more than 100 values (object members and array items)"
    assert [problem["type"] for problem in answer["detail"]] == ["too_many_values"]


def test_a_body_within_every_limit_is_served(world: World) -> None:
    response = world.client.post(
        "/v1/projects", json={"name": "bounded"}, headers=bearer(world.tokens["owner"])
    )
    assert response.status_code == 201, response.text
