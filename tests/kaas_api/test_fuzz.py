"""No input causes a 500: random JSON, mutated valid bodies, malformed bytes and hostile path parameters
thrown at every write endpoint (as an admin, so requests reach the deepest code).

The TestClient re-raises server exceptions, so an unhandled error fails the test with its traceback.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kaas_api.conftest import World
from tests.kaas_api.test_authorization import MATRIX

# the k8s proxy passes bodies through to the user cluster untouched (its own tests are in tests/kaas_api/k8s)
WRITES = sorted(
    (method, path)
    for method, path in MATRIX
    if method in ("POST", "PUT", "PATCH", "DELETE") and not path.startswith("/k8s/")
)

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.sampled_from(["\x00", "a\x00b", "é", "💥", "x" * 5000, "../../etc", "%00", "' OR 1=1 --", "-", "ab-"]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
common = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def path_for(template: str, world: World, value: str | None = None) -> str:
    defaults = {
        "project": "alpha",
        "cluster": "c1",
        "pool": "p1",
        "user": "extra",
        "region": "spare",
        "token_id": world.spare_token_ids["admin"],
        "kubeconfig_token_id": world.spare_token_ids["admin"],
        "operation_id": world.operation_id,
        "cluster_id": world.cluster_id,
        "webhook_id": "00000000-0000-0000-0000-000000000000",
        "delivery_id": "00000000-0000-0000-0000-000000000000",
    }
    if value is not None:
        defaults = {key: quote(value, safe="") or "x" for key in defaults}
    return template.format(**defaults)


def assert_no_server_error(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400 and response.content:
        assert set(response.json()) >= {"error", "detail"}, what


@pytest.mark.parametrize(("method", "template"), WRITES)
def test_random_json_bodies_never_cause_a_server_error(world: World, method: str, template: str) -> None:
    @common
    @given(body=json_values)
    def run(body: Any) -> None:
        response = world.call("admin", method, path_for(template, world), body)
        assert_no_server_error(response, f"{method} {template} {body!r:.200}")

    run()


@pytest.mark.parametrize(("method", "template"), [w for w in WRITES if MATRIX[w].body is not None])
def test_valid_bodies_with_one_field_replaced_never_cause_a_server_error(
    world: World, method: str, template: str
) -> None:
    valid: dict[str, Any] = MATRIX[(method, template)].body

    @common
    @given(key=st.sampled_from(sorted(valid)), value=json_values, nested=st.booleans())
    def run(key: str, value: Any, nested: bool) -> None:
        body = json.loads(json.dumps(valid))
        if nested and isinstance(body[key], list) and body[key] and isinstance(body[key][0], dict):
            inner = body[key][0]
            inner[sorted(inner)[0]] = value
        elif nested and isinstance(body[key], dict) and body[key]:
            body[key][sorted(body[key])[0]] = value
        else:
            body[key] = value
        response = world.call("admin", method, path_for(template, world), body)
        assert_no_server_error(response, f"{method} {template} {body!r:.300}")

    run()


@pytest.mark.parametrize(("method", "template"), WRITES)
def test_hostile_path_parameters_and_raw_bytes_never_cause_a_server_error(
    world: World, method: str, template: str
) -> None:
    @common
    @given(value=hostile_text, raw=st.binary(max_size=200))
    def run(value: str, raw: bytes) -> None:
        body = MATRIX[(method, template)].body
        response = world.call("admin", method, path_for(template, world, value), body)
        assert_no_server_error(response, f"{method} {template} path={value!r:.100}")
        response = world.client.request(
            method,
            path_for(template, world),
            content=raw,
            headers={**world.auth("admin"), "content-type": "application/json"},
        )
        assert_no_server_error(response, f"{method} {template} raw={raw!r:.100}")

    run()
