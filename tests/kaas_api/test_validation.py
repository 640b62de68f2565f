"""Validation: each kind of bad input answers 422 ``invalid_input`` (409 for conflicts) with a message a
person can act on, in the same ``{"error", "message", "detail"}`` shape as every other error."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kaas_api.conftest import World, cluster_body

CLUSTERS = "/v1/projects/alpha/clusters"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": "My_Cluster"}, "not a valid name"),
        ({"name": "-abc"}, "DNS-1123"),
        ({"name": "a" * 64}, "at most 63 characters"),
        ({"name": ""}, "must not be empty"),
        ({"region": "nowhere"}, "region 'nowhere' does not exist; available: r1, spare"),
        ({"kubernetes_version": "1.20.0"}, "allowed: 1.30.2, 1.29.6"),
        ({"control_plane": {"count": 2, "flavor": "small"}}, "control plane count must be 1 or 3"),
        (
            {"control_plane": {"count": 1, "flavor": "huge"}},
            "flavor 'huge' is not offered in region 'r1'; allowed: large, small",
        ),
        (
            {"node_pools": [{"name": "p", "flavor": "tiny", "count": 1}]},
            "node_pools[0].flavor: flavor 'tiny'",
        ),
        (
            {"node_pools": [{"name": "p", "flavor": "small", "count": 101}]},
            "node_pools[0].count: Input should be less than or equal to 100",
        ),
        ({"node_pools": [{"name": "p", "flavor": "small", "count": -1}]}, "greater than or equal to 0"),
        ({"node_pools": [{"name": "Bad Pool", "flavor": "small", "count": 1}]}, "node_pools[0].name"),
        (
            {
                "node_pools": [
                    {"name": "p", "flavor": "small", "count": 1},
                    {"name": "p", "flavor": "large", "count": 1},
                ]
            },
            "node pool names must be unique within a cluster; repeated: p",
        ),
        (
            {
                "node_pools": [
                    {
                        "name": "p",
                        "flavor": "small",
                        "count": 1,
                        "taints": [{"key": "k", "effect": "Sometimes"}],
                    }
                ]
            },
            "effect",
        ),
        (
            {"node_pools": [{"name": "p", "flavor": "small", "count": 1, "labels": {"bad key!": "v"}}]},
            "not a valid key",
        ),
        ({"node_cidr": "10.0.0.0/33"}, "not a valid CIDR"),
        ({"node_cidr": "10.0.0.1/24"}, "host bits set"),
        ({"pod_cidr": "banana"}, "is not a CIDR"),
        ({"node_cidr": "10.96.0.0/24"}, "node_cidr 10.96.0.0/24 overlaps service_cidr 10.96.0.0/12"),
        ({"pod_cidr": "10.0.0.0/8"}, "node_cidr 10.0.0.0/24 overlaps pod_cidr 10.0.0.0/8"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_cluster_input_is_422_with_an_actionable_message(
    world: World, overrides: dict[str, Any], fragment: str
) -> None:
    response = world.call("member", "POST", CLUSTERS, {**cluster_body("c2"), **overrides})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert fragment in body["message"]
    assert body["detail"] is not None


def test_duplicate_live_cluster_name_is_409(world: World) -> None:
    response = world.call("member", "POST", CLUSTERS, cluster_body("c1"))
    assert response.status_code == 409
    assert response.json()["message"] == "a cluster named 'c1' already exists in project 'alpha'"


def test_missing_fields_are_named(world: World) -> None:
    response = world.call("member", "POST", CLUSTERS, {"name": "x"})
    assert response.status_code == 422
    assert {d["field"] for d in response.json()["detail"]} == {"region", "control_plane"}


def test_malformed_json_is_422_invalid_input(world: World) -> None:
    response = world.client.post(
        CLUSTERS, content=b"{not json", headers={**world.auth("member"), "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/projects", {"name": "Team A"}, "not a valid name"),
        ("/v1/projects", {"name": "ok", "description": "bell\x07"}, "control characters"),
        ("/v1/users", {"name": "UPPER"}, "not a valid name"),
        ("/v1/regions", {"name": "r_2", "cloud": "c"}, "not a valid name"),
        (
            "/v1/regions",
            {"name": "r2", "cloud": "c", "dns_nameservers": ["dns.example"]},
            "is not an IP address",
        ),
        (
            "/v1/regions",
            {"name": "r2", "cloud": "c", "flavors": [{"name": "f", "vcpus": 0, "ram_mb": 1}]},
            "vcpus",
        ),
        (
            "/v1/regions",
            {
                "name": "r2",
                "cloud": "c",
                "kubernetes_versions": ["1.30.0"],
                "default_kubernetes_version": "1.29.0",
            },
            "default_kubernetes_version '1.29.0' is not in kubernetes_versions ['1.30.0']",
        ),
        (
            "/v1/regions",
            {"name": "r2", "cloud": "c", "default_pod_cidr": "10.0.0.0/8"},
            "default CIDRs must not overlap",
        ),
        ("/v1/tokens", {"ttl_days": 0}, "ttl_days"),
        (
            "/v1/projects/alpha/clusters/c1/node-pools",
            {"name": "p1", "flavor": "small", "count": 1},
            "already exists",
        ),
    ],
)
def test_bad_input_on_other_endpoints(world: World, path: str, body: dict[str, Any], fragment: str) -> None:
    response = world.call("admin", "POST", path, body)
    assert response.status_code in (409, 422), response.text
    assert response.json()["error"] in ("invalid_input", "conflict")
    assert fragment in response.json()["message"]


def test_duplicate_project_is_409(world: World) -> None:
    assert world.call("member", "POST", "/v1/projects", {"name": "alpha"}).status_code == 409


def test_unknown_route_uses_the_same_error_shape(world: World) -> None:
    response = world.call("member", "GET", "/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
