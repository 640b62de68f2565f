"""The OpenAPI document tells the truth (``kaas_api.openapi``): every error is documented with the body kaas
sends, every status a route answers is documented for it, names carry their real pattern and lengths, and
the inputs it calls integers and date-times are refused when they are not.

The end-to-end check of the same promise, with schemathesis against ``kaas up``, is
``tests/e2e/test_openapi_conformance.py``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from sqlalchemy.orm import sessionmaker

from kaas_api.app import create_app
from kaas_api.errors import RULES_BEYOND_SCHEMA
from kaas_api.projects.schemas import ProjectCreate
from kaas_api.schemas import Timestamp
from kaas_api.validation import DNS_LABEL_MAX, DNS_LABEL_PATTERN, check_dns_label
from kaas_api.webhooks.schemas import WEBHOOK_URL_PATTERN, check_webhook_url
from tests.kaas_api.conftest import PRINCIPALS, RecordingDispatcher, World, cluster_body, default_settings
from tests.kaas_api.test_authorization import MATRIX, concrete_path

ERROR_BODY = "#/components/schemas/ErrorBody"
KUBE_STATUS = "#/components/schemas/KubeStatus"
CLUSTERS = "/v1/projects/alpha/clusters"
API_ROUTES = sorted(
    key for key, access in MATRIX.items() if access.level != "public" and key[0] != "WEBSOCKET"
)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The document of the app as the ``app`` fixture builds it: made once per module, as making it takes
    most of a second."""
    app = create_app(default_settings(), session_factory=sessionmaker(), dispatcher=RecordingDispatcher())
    return app.openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_the_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(json.loads(json.dumps(spec)))


def test_every_error_answer_is_documented_with_the_body_kaas_sends(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(spec)
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            if status[0] not in "45":
                continue
            schema = response["content"]["application/json"]["schema"]
            expected = KUBE_STATUS if path.startswith("/k8s/") else ERROR_BODY
            assert schema == {"$ref": expected}, (method, path, status)


def test_the_error_body_is_the_documented_shape(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["error", "message"]
    problem = schemas["FieldProblem"]
    assert problem["required"] == ["field", "message", "type"]
    for rule in RULES_BEYOND_SCHEMA:
        assert rule in problem["properties"]["type"]["description"]


def test_the_k8s_proxy_documents_its_503_for_an_agent_not_connected(spec: dict[str, Any]) -> None:
    proxy = spec["paths"]["/k8s/clusters/{cluster_id}/{path}"]
    assert set(proxy) == {"get", "post", "put", "patch", "delete", "head", "options"}
    for op in proxy.values():
        assert "not connected" in op["responses"]["503"]["description"]
        assert {"401", "404", "default"} <= set(op["responses"])


def test_every_path_parameter_documents_the_form_its_lookup_accepts(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        for parameter in op.get("parameters", []):
            if parameter["in"] != "path" or parameter["name"] == "path":
                continue
            assert "pattern" in parameter["schema"], (method, path, parameter["name"])
    project = spec["paths"]["/v1/projects/{project}"]["get"]["parameters"][0]
    assert project["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "pattern": f"^{DNS_LABEL_PATTERN}$",
    }


def test_a_name_in_a_body_carries_the_pattern_and_lengths_the_check_applies() -> None:
    schema = ProjectCreate.model_json_schema()["properties"]["name"]
    assert (schema["minLength"], schema["maxLength"]) == (1, DNS_LABEL_MAX)
    pattern = re.compile(schema["pattern"].removesuffix("$") + r"\Z")  # ECMA-262's $: the very end
    for name in ("a", "my-cluster-1", "x" * 63, "", "-a", "a-", "A", "a_b", "x" * 64, "a\n"):
        documented = len(name) >= 1 and len(name) <= DNS_LABEL_MAX and pattern.search(name) is not None
        try:
            check_dns_label(name)
            accepted = True
        except ValueError:
            accepted = False
        assert documented == accepted, name


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/kaas",
        "http://[::1]:8443/hook?x=1",
        "HTTPS://A.B:65535",
        "https://x/é",
        "https://a:0/",
        "https://x/a#b",
        "https://user@x/",
        "ftp://x/",
    ],
)
def test_the_webhook_url_pattern_is_what_the_check_accepts(url: str) -> None:
    documented = re.fullmatch(WEBHOOK_URL_PATTERN, url) is not None
    try:
        check_webhook_url(url)
        accepted = True
    except ValueError:
        accepted = False
    assert documented == accepted


@pytest.mark.parametrize(("method", "template"), API_ROUTES)
def test_every_status_a_route_answers_is_documented_for_it(
    world: World, spec: dict[str, Any], method: str, template: str
) -> None:
    documented = set(spec["paths"][template][method.lower()]["responses"])
    body = MATRIX[(method, template)].body
    for who in (None, *PRINCIPALS):
        response = world.call(who, method, concrete_path(world, template, who or "admin"), body)
        assert str(response.status_code) in documented, (who, response.status_code, response.text[:300])


def test_a_405_allows_every_method_of_the_path(world: World) -> None:
    response = world.call("admin", "PUT", "/v1/projects/alpha")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("ttl_days", [True, "5", 1.5])
def test_a_token_lifetime_must_be_a_json_integer(world: World, ttl_days: Any) -> None:
    response = world.call("member", "POST", "/v1/tokens", {"ttl_days": ttl_days})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == "ttl_days"


def test_a_pool_count_of_true_is_refused(world: World) -> None:
    body = cluster_body("c2", node_pools=[{"name": "p", "flavor": "small", "count": True}])
    response = world.call("member", "POST", CLUSTERS, body)
    assert response.status_code == 422
    assert response.json()["detail"][0] == {
        "field": "node_pools[0].count",
        "message": "Input should be a valid integer",
        "type": "int_type",
    }


@pytest.mark.parametrize("until", ["0.5", "1700000000", "2026-01-01", "2026-01-01T00:00:00"])
def test_the_audit_search_takes_only_rfc3339_times_with_a_zone(world: World, until: str) -> None:
    response = world.client.get("/v1/admin/audit", params={"until": until}, headers=world.auth("admin"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == "until"


def test_the_audit_search_takes_a_time_with_its_zone(world: World) -> None:
    for until in ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00"):
        response = world.client.get("/v1/admin/audit", params={"until": until}, headers=world.auth("admin"))
        assert response.status_code == 200, response.text


def test_every_time_in_an_answer_is_utc_with_z(world: World) -> None:
    me = world.call("admin", "GET", "/v1/me").json()
    cluster = world.call("admin", "GET", CLUSTERS + "/c1").json()
    for value in (me["created_at"], cluster["created_at"], cluster["updated_at"]):
        assert value.endswith("Z"), value
        assert datetime.fromisoformat(value).utcoffset() is not None


def test_a_time_read_back_without_its_zone_is_rendered_as_utc_with_z() -> None:
    class Out(BaseModel):
        at: Timestamp

    # SQLite, the embedded mode's database, gives stored UTC times back without a zone
    assert Out(at=datetime(2026, 12, 1, 9, 30)).model_dump_json() == '{"at":"2026-12-01T09:30:00Z"}'


def test_a_malformed_json_body_says_where_in_its_message_not_in_a_field(world: World) -> None:
    headers = {**world.auth("member"), "content-type": "application/json"}
    response = world.client.post(CLUSTERS, content=b'{"name": "c2",}', headers=headers)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == ""
    assert problem["type"] == "json_invalid"
    assert problem["message"].startswith("the request body is not valid JSON:")
    assert "at character 14" in problem["message"]


def test_a_body_that_is_not_utf8_is_a_400_bad_request(world: World) -> None:
    headers = {**world.auth("member"), "content-type": "application/json"}
    response = world.client.post(CLUSTERS, content=b'{"name": "\xff"}', headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert "could not be read as JSON" in response.json()["message"]


def test_a_rule_of_a_service_answers_the_same_problem_list_as_the_schema(world: World) -> None:
    body = cluster_body("c2", control_plane={"count": 1, "flavor": "huge"})
    response = world.call("member", "POST", CLUSTERS, body)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["field"], problem["type"], problem["allowed"]) == (
        "control_plane.flavor",
        "not_offered",
        ["large", "small"],
    )


def test_a_project_is_found_by_the_id_its_answers_give(world: World) -> None:
    project = world.call("member", "GET", "/v1/projects/alpha").json()
    response = world.call("member", "GET", f"/v1/projects/{project['id']}")
    assert response.status_code == 200
    assert response.json()["name"] == "alpha"
    assert world.call("outsider", "GET", f"/v1/projects/{project['id']}").status_code == 404
