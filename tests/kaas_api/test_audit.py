"""The audit log: every mutating endpoint leaves an event (checked over the OpenAPI route list, so a new
endpoint without audit fails here), with who, what, which resource, when, the outcome, the request id and
the source IP; refused calls are recorded too; secrets never are; admins read it with filters."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import AuditEvent
from tests.kaas_api.conftest import World, cluster_body

MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def mutating_routes(app: FastAPI) -> list[tuple[str, str]]:
    routes = []
    for path, operations in app.openapi()["paths"].items():
        routes.extend((method.upper(), path) for method in operations if method.upper() in MUTATING)
    return sorted(routes)


def fill(template: str, world: World) -> str:
    return template.format(
        project="alpha",
        cluster="c1",
        cluster_id=world.cluster_id,
        pool="p1",
        user="extra",
        region="spare",
        token_id=str(uuid.uuid4()),
        kubeconfig_token_id=str(uuid.uuid4()),
        operation_id=world.operation_id,
        webhook_id=str(uuid.uuid4()),
        delivery_id=str(uuid.uuid4()),
        path="api/v1/namespaces",
    )


def events(session_factory: sessionmaker[Session], **where: Any) -> list[AuditEvent]:
    with session_factory() as session:
        query = select(AuditEvent).order_by(AuditEvent.at)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(session.scalars(query))


def test_the_route_list_has_the_mutating_endpoints(app: FastAPI) -> None:
    routes = mutating_routes(app)
    assert ("POST", "/v1/projects/{project}/clusters") in routes
    assert ("DELETE", "/v1/tokens/{token_id}") in routes
    assert len(routes) >= 20


def test_every_mutating_endpoint_leaves_an_audit_event(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    missing = []
    for method, template in mutating_routes(app):
        request_id = f"audit-{uuid.uuid4().hex}"
        response = world.client.request(
            method,
            fill(template, world),
            json={},
            headers={**world.auth("admin"), "X-Request-ID": request_id},
        )
        assert response.headers["x-request-id"] == request_id
        found = events(session_factory, request_id=request_id)
        if len(found) != 1 or found[0].route != template or found[0].method != method:
            missing.append((method, template, response.status_code, [(e.method, e.route) for e in found]))
            continue
        event = found[0]
        assert event.actor_name == "admin", (method, template)
        assert event.status_code == response.status_code
        assert event.outcome == (
            "success" if response.status_code < 400 else "refused" if response.status_code < 500 else "failed"
        )
    assert not missing, f"mutating endpoints without an audit event: {missing}"


def test_an_event_says_who_did_what_to_which_resource_when_and_from_where(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    before = datetime.now(UTC)
    response = world.client.post(
        "/v1/projects/alpha/clusters", json=cluster_body("audited"), headers=world.auth("member")
    )
    assert response.status_code == 202, response.text
    (event,) = events(session_factory, request_id=response.headers["x-request-id"])
    assert event.actor_name == "member"
    assert event.actor_id == world.user_ids["member"]
    assert event.action == "create_cluster"
    assert event.route == "/v1/projects/{project}/clusters"
    assert event.project_id == "alpha"
    assert (event.resource_type, event.resource_id) == ("project", "alpha")
    assert event.outcome == "success"
    assert event.status_code == 202
    assert event.via == "api"
    assert event.source_ip == "testclient"
    assert before - timedelta(seconds=1) <= event.at.astimezone(UTC) <= datetime.now(UTC)


def test_refused_and_unauthenticated_attempts_are_recorded(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    refused = world.call("viewer", "DELETE", "/v1/projects/alpha/clusters/c1")
    assert refused.status_code == 403
    (event,) = events(session_factory, request_id=refused.headers["x-request-id"])
    assert (event.actor_name, event.outcome, event.status_code) == ("viewer", "refused", 403)
    assert (event.resource_type, event.resource_id, event.cluster_id) == ("cluster", "c1", "c1")

    anonymous = world.call(None, "DELETE", "/v1/projects/alpha/clusters/c1")
    assert anonymous.status_code == 401
    (event,) = events(session_factory, request_id=anonymous.headers["x-request-id"])
    assert (event.actor_name, event.outcome) == (None, "refused")


def test_a_refusal_is_recorded_with_its_reason(world: World, session_factory: sessionmaker[Session]) -> None:
    refused = world.call("viewer", "DELETE", "/v1/projects/alpha/clusters/c1")
    (event,) = events(session_factory, request_id=refused.headers["x-request-id"])
    assert event.detail["reason"] == refused.json()["message"]

    invalid = world.call("owner", "POST", "/v1/projects/alpha/clusters", cluster_body("Not_A_Name"))
    assert invalid.status_code == 422
    (event,) = events(session_factory, request_id=invalid.headers["x-request-id"])
    assert event.outcome == "refused"
    assert event.detail["reason"].startswith("name:")


def test_a_method_the_path_does_not_serve_is_recorded_as_that_not_as_another_endpoint(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    put = world.call("owner", "PUT", "/v1/projects/alpha/clusters/c1", {})
    assert put.status_code == 405
    (event,) = events(session_factory, request_id=put.headers["x-request-id"])
    assert (event.action, event.method, event.status_code) == ("method_not_allowed", "PUT", 405)
    assert event.route == "/v1/projects/{project}/clusters/{cluster}"
    assert "PUT is not allowed here; allowed:" in event.detail["reason"]
    assert "GET" in event.detail["reason"]


def test_reads_are_not_audited(world: World, session_factory: sessionmaker[Session]) -> None:
    response = world.call("owner", "GET", "/v1/projects/alpha/clusters")
    assert response.status_code == 200
    assert events(session_factory, request_id=response.headers["x-request-id"]) == []


def test_secrets_never_reach_the_audit_log(world: World, session_factory: sessionmaker[Session]) -> None:
    created = world.call("owner", "POST", "/v1/tokens", {"description": "for ci", "ttl_days": 1})
    assert created.status_code == 201
    token = created.json()["token"]
    user = world.call("admin", "POST", "/v1/users", {"name": "newbie"})
    assert user.status_code == 201
    first_token = user.json()["token"]
    dumped = json.dumps(
        [
            {column.name: str(getattr(event, column.name)) for column in AuditEvent.__table__.columns}
            for event in events(session_factory)
        ]
    )
    assert "create_token" in dumped
    assert "create_user" in dumped
    for secret in (token, first_token, world.tokens["owner"], world.tokens["admin"]):
        assert secret not in dumped
    assert "for ci" not in dumped  # no request body at all


def test_a_bad_request_id_from_the_client_is_replaced(world: World) -> None:
    response = world.client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


def test_admins_read_the_audit_log_with_filters(world: World) -> None:
    world.call("viewer", "DELETE", "/v1/projects/alpha/clusters/c1")
    world.call(
        "owner", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 2}]}
    )

    everything = world.call("admin", "GET", "/v1/admin/audit")
    assert everything.status_code == 200
    actions = [e["action"] for e in everything.json()]
    assert actions[:2] == ["update_cluster", "delete_cluster"]  # newest first

    by_user = world.call("admin", "GET", "/v1/admin/audit?user=viewer").json()
    assert [(e["actor_name"], e["action"], e["outcome"]) for e in by_user] == [
        ("viewer", "delete_cluster", "refused")
    ]
    by_cluster = world.call("admin", "GET", "/v1/admin/audit?cluster=c1&action=update_*").json()
    assert [e["action"] for e in by_cluster] == ["update_cluster"]
    refused = world.call("admin", "GET", "/v1/admin/audit?outcome=refused").json()
    assert {e["actor_name"] for e in refused} == {"viewer"}
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert (
        world.client.get("/v1/admin/audit", params={"since": later}, headers=world.auth("admin")).json() == []
    )
    assert world.call("admin", "GET", "/v1/admin/audit?limit=1").json()[0]["action"] == "update_cluster"


@pytest.mark.parametrize("who", ["owner", "member", "viewer", "outsider"])
def test_only_admins_read_the_audit_log(world: World, who: str) -> None:
    assert world.call(who, "GET", "/v1/admin/audit").status_code == 403
