"""The auth and role matrix: every route of the app, every kind of caller.

``MATRIX`` must list every (method, path) of ``app.routes``; a new endpoint without an entry fails
``test_every_route_is_in_the_matrix``. For each route: no token, a bad, an expired and a revoked token
answer 401; then each principal gets what the design says: allowed (2xx), 403 (visible but too weak a
role, or not an admin), or 404 (not a member: the project's existence is not revealed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import Mount, Route, WebSocketRoute

from kaas_api.auth.service import Principal, issue_token, revoke_token
from kaas_api.kubeconfig.service import issue_kubeconfig_token
from kaas_api.webhooks.service import create_webhook
from kaas_core.db.models import (
    ApiToken,
    Cluster,
    DeliveryState,
    Project,
    User,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)
from kaas_core.egress import EgressPolicy
from kaas_core.security import SecretBox
from tests.kaas_api.conftest import PRINCIPALS, SECRET_KEY, World, bearer, cluster_body


@dataclass(frozen=True)
class Access:
    level: str  # public | user | admin | viewer | member | owner | project_admin
    body: Any = None


C = "/v1/projects/{project}/clusters/{cluster}"
K8S = "/k8s/clusters/{cluster_id}/{path}"
MATRIX: dict[tuple[str, str], Access] = {
    ("GET", "/healthz"): Access("public"),
    ("GET", "/readyz"): Access("public"),
    ("GET", "/openapi.json"): Access("public"),
    ("GET", "/docs"): Access("public"),
    ("GET", "/redoc"): Access("public"),
    ("MOUNT", "/docs/assets"): Access("public"),  # static files: test_the_docs_assets_need_no_token
    ("GET", "/metrics"): Access("admin"),  # or the scrape token: tests/kaas_api/test_metrics.py
    ("POST", "/v1/users"): Access("admin", {"name": "newcomer"}),
    ("GET", "/v1/users"): Access("admin"),
    ("GET", "/v1/me"): Access("user"),
    ("POST", "/v1/tokens"): Access("user", {"description": "ci", "ttl_days": 1}),
    ("GET", "/v1/tokens"): Access("user"),
    ("DELETE", "/v1/tokens/{token_id}"): Access("user"),
    ("POST", "/v1/projects"): Access("user", {"name": "fresh"}),
    ("GET", "/v1/projects"): Access("user"),
    ("GET", "/v1/projects/{project}"): Access("viewer"),
    ("DELETE", "/v1/projects/{project}"): Access("owner"),
    ("GET", "/v1/projects/{project}/members"): Access("viewer"),
    ("GET", "/v1/projects/{project}/members/{user}"): Access("viewer"),
    ("PUT", "/v1/projects/{project}/members/{user}"): Access("owner", {"role": "member"}),
    ("DELETE", "/v1/projects/{project}/members/{user}"): Access("owner"),
    ("GET", "/v1/projects/{project}/quota"): Access("viewer"),
    ("PUT", "/v1/projects/{project}/quota"): Access(
        "project_admin", {"max_clusters": 5, "max_nodes": 20, "max_vcpus": None, "max_ram_mb": None}
    ),
    ("POST", "/v1/regions"): Access("admin", {"name": "r2", "cloud": "os-real-demo"}),
    ("GET", "/v1/regions"): Access("user"),
    ("GET", "/v1/regions/{region}"): Access("user"),
    ("PATCH", "/v1/regions/{region}"): Access("admin", {"image": "ubuntu-24.04"}),
    ("DELETE", "/v1/regions/{region}"): Access("admin"),
    ("POST", "/v1/projects/{project}/clusters"): Access("member", cluster_body("c2")),
    ("GET", "/v1/projects/{project}/clusters"): Access("viewer"),
    ("GET", C): Access("viewer"),
    ("PATCH", C): Access("member", {"node_pools": [{"name": "p1", "count": 2}]}),
    ("DELETE", C): Access("member"),
    ("GET", C + "/node-pools"): Access("viewer"),
    ("POST", C + "/node-pools"): Access("member", {"name": "p2", "flavor": "large", "count": 1}),
    ("GET", C + "/node-pools/{pool}"): Access("viewer"),
    ("PATCH", C + "/node-pools/{pool}"): Access("member", {"count": 3}),
    ("DELETE", C + "/node-pools/{pool}"): Access("member"),
    # c1's create operation is unfinished: a member passes authorization and meets the 409
    ("POST", C + "/node-pools/{pool}/upgrade"): Access(
        "member_conflict", {"kubernetes_version": "1.30.2", "upgrade_strategy": {"max_surge": 1}}
    ),
    ("GET", C + "/nodes"): Access("viewer"),
    ("GET", C + "/operations"): Access("viewer"),
    ("GET", "/v1/operations/{operation_id}"): Access("viewer"),
    # c1's create operation is pending: no upgrade or repair to cancel, pause or roll back, no paused one to
    # resume; members get through to the 409 (the state rules: tests/kaas_api/test_operations_control.py)
    ("POST", "/v1/operations/{operation_id}/cancel"): Access("member_conflict"),
    ("POST", "/v1/operations/{operation_id}/resume"): Access("member_conflict"),
    ("POST", "/v1/operations/{operation_id}/pause"): Access("member_conflict"),
    ("POST", "/v1/operations/{operation_id}/rollback"): Access("member_conflict"),
    ("GET", C + "/kubeconfig"): Access("viewer"),
    ("GET", "/v1/kubeconfig-tokens"): Access("user"),
    ("DELETE", "/v1/kubeconfig-tokens/{kubeconfig_token_id}"): Access("user"),
    ("POST", "/v1/projects/{project}/webhooks"): Access(
        "owner", {"url": "https://hooks.example.com/kaas", "events": ["operation.failed"]}
    ),
    ("GET", "/v1/projects/{project}/webhooks"): Access("viewer"),
    ("GET", "/v1/projects/{project}/webhooks/{webhook_id}"): Access("viewer"),
    ("DELETE", "/v1/projects/{project}/webhooks/{webhook_id}"): Access("owner"),
    ("PATCH", "/v1/projects/{project}/webhooks/{webhook_id}"): Access("owner", {"enabled": False}),
    ("POST", "/v1/projects/{project}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): Access(
        "owner"
    ),
    ("GET", "/v1/projects/{project}/webhooks/{webhook_id}/deliveries"): Access("viewer"),
    ("GET", "/v1/admin/audit"): Access("admin"),
    ("GET", "/v1/admin/clusters"): Access("admin"),
    ("POST", "/v1/admin/clusters/{cluster_id}/pause"): Access("admin"),
    ("POST", "/v1/admin/clusters/{cluster_id}/resume"): Access("admin"),
    # c1's create operation has not failed: an admin passes authorization and meets the 409
    ("POST", "/v1/admin/clusters/{cluster_id}/retry"): Access("admin_conflict"),
    ("DELETE", "/v1/admin/clusters/{cluster_id}"): Access("admin"),
    **{
        (method, K8S): Access("k8s")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
    },
}

EXPECTED: dict[str, dict[str, int | None]] = {
    "user": dict.fromkeys(PRINCIPALS),
    "admin": {"admin": None, "owner": 403, "member": 403, "viewer": 403, "outsider": 403},
    "admin_conflict": {"admin": 409, "owner": 403, "member": 403, "viewer": 403, "outsider": 403},
    "member_conflict": {"admin": 409, "owner": 409, "member": 409, "viewer": 403, "outsider": 404},
    "viewer": {"admin": None, "owner": None, "member": None, "viewer": None, "outsider": 404},
    "member": {"admin": None, "owner": None, "member": None, "viewer": 403, "outsider": 404},
    "owner": {"admin": None, "owner": None, "member": 403, "viewer": 403, "outsider": 404},
    "project_admin": {"admin": None, "owner": 403, "member": 403, "viewer": 403, "outsider": 404},
    # the k8s proxy: every member passes kaas (no agent is connected in this app: 503), outsiders see nothing
    "k8s": {"admin": 503, "owner": 503, "member": 503, "viewer": 503, "outsider": 404},
}
STATUS_REASONS = {
    "Unauthorized": "unauthenticated",
    "Forbidden": "forbidden",
    "NotFound": "not_found",
    "ServiceUnavailable": "service_unavailable",
}


def error_name(response: Any) -> str | None:
    """The ``error`` of a kaas error body, or the same name for a Kubernetes ``Status`` (the k8s proxy);
    None for a body-less answer (HEAD)."""
    if not response.content:
        return None
    body = response.json()
    if body.get("kind") == "Status":
        return STATUS_REASONS[body["reason"]]
    return str(body["error"])


def kubeconfig_token_id(world: World, who: str) -> str:
    """A fresh kubeconfig token of ``who`` on ``c1`` (for the revoke route)."""
    session_factory: sessionmaker[Session] = world.client.app.state.kaas.session_factory  # type: ignore[attr-defined]
    with session_factory() as session:
        user = session.get(User, world.user_ids[who])
        cluster = session.get(Cluster, world.cluster_id)
        assert user is not None
        assert cluster is not None
        row, _token = issue_kubeconfig_token(session, user=user, cluster=cluster, ttl=timedelta(days=1))
        session.commit()
        return row.id


def webhook_id(world: World) -> str:
    """A fresh webhook of project ``alpha`` (for the routes that name one)."""
    session_factory: sessionmaker[Session] = world.client.app.state.kaas.session_factory  # type: ignore[attr-defined]
    with session_factory() as session:
        project = session.scalars(select(Project).where(Project.name == "alpha")).one()
        owner = session.get_one(User, world.user_ids["owner"])
        webhook, _secret = create_webhook(
            session,
            project=project,
            url="https://hooks.example.com/kaas",
            events=[WebhookEvent.OPERATION_FAILED],
            secret=None,
            created_by=owner,
            secret_box=SecretBox(SECRET_KEY),
            egress=EgressPolicy(),
        )
        session.commit()
        return webhook.id


def failed_delivery_id(world: World, hook: str) -> str:
    """A failed delivery of webhook ``hook`` (for the redeliver route)."""
    session_factory: sessionmaker[Session] = world.client.app.state.kaas.session_factory  # type: ignore[attr-defined]
    with session_factory() as session:
        webhook = session.get_one(Webhook, hook)
        delivery = WebhookDelivery(
            webhook_id=hook,
            project_id=webhook.project_id,
            operation_id=world.operation_id,
            cluster_id=world.cluster_id,
            event=WebhookEvent.OPERATION_FAILED.value,
            payload={},
            state=DeliveryState.FAILED.value,
            attempts=6,
        )
        session.add(delivery)
        session.commit()
        return delivery.id


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app serves: the OpenAPI operations (every API route, however routers are
    included) plus the plain Starlette routes (docs, schema). A route hidden from the schema is refused."""
    found: set[tuple[str, str]] = set()
    for path, operations in app.openapi()["paths"].items():
        found.update((method.upper(), path) for method in operations)
    for route in app.routes:
        if isinstance(route, APIRoute):
            raise AssertionError(f"route {route.path} must be included through a router with a schema")
        if isinstance(route, Route):
            found.update((method, route.path) for method in route.methods or () if method != "HEAD")
        elif isinstance(route, WebSocketRoute):
            found.add(("WEBSOCKET", route.path))  # not in the schema: must be listed (and tested) by hand
        elif isinstance(route, Mount):
            found.add(("MOUNT", route.path))
    return found


def concrete_path(world: World, template: str, who: str) -> str:
    project = "empty" if template == "/v1/projects/{project}" else "alpha"
    region = "spare" if template == "/v1/regions/{region}" else "r1"
    if "{kubeconfig_token_id}" in template:
        template = template.replace("{kubeconfig_token_id}", kubeconfig_token_id(world, who))
    if "{webhook_id}" in template:
        hook = webhook_id(world)
        template = template.replace("{webhook_id}", hook)
        if "{delivery_id}" in template:
            template = template.replace("{delivery_id}", failed_delivery_id(world, hook))
    return template.format(
        cluster_id=world.cluster_id,
        path="api/v1/namespaces",
        project=project,
        cluster="c1",
        pool="p1",
        user="extra",
        region=region,
        token_id=world.spare_token_ids.get(who, "00000000-0000-0000-0000-000000000000"),
        operation_id=world.operation_id,
    )


def test_every_route_is_in_the_matrix(app: FastAPI) -> None:
    routes = app_routes(app)
    missing = sorted(routes - MATRIX.keys())
    stale = sorted(MATRIX.keys() - routes)
    assert not missing, f"routes without an authorization test: {missing}"
    assert not stale, f"matrix entries for routes that do not exist: {stale}"


PROTECTED = sorted(key for key, access in MATRIX.items() if access.level != "public")
PUBLIC = sorted(key for key, access in MATRIX.items() if access.level == "public" and key[0] != "MOUNT")


@pytest.mark.parametrize(("method", "template"), PUBLIC)
def test_public_route_needs_no_token(world: World, method: str, template: str) -> None:
    response = world.call(None, method, template)
    assert response.status_code == 200, response.text


def test_the_docs_assets_need_no_token(world: World) -> None:
    response = world.call(None, "GET", "/docs/assets/swagger-ui.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def _bad_tokens(world: World, session_factory: sessionmaker[Session], *, k8s: bool) -> dict[str, str]:
    with session_factory() as session:
        user = session.get(User, world.user_ids["admin"])
        assert user is not None
        _expired, expired = issue_token(session, user, ttl=timedelta(seconds=-1))
        revoked_row, revoked = issue_token(session, user)
        token_row = session.get(ApiToken, revoked_row.id)
        assert token_row is not None
        revoke_token(session, Principal.of(user, token_row), revoked_row.id)
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        _kc, kubeconfig = issue_kubeconfig_token(session, user=user, cluster=cluster, ttl=timedelta(days=1))
        _kc_expired, kubeconfig_expired = issue_kubeconfig_token(
            session, user=user, cluster=cluster, ttl=timedelta(seconds=-1)
        )
        session.commit()
    tokens = {"unknown": "kaas_not-a-real-token", "expired": expired, "revoked": revoked}
    tokens["kubeconfig-expired"] = kubeconfig_expired
    if not k8s:
        tokens["kubeconfig"] = kubeconfig  # valid on its cluster's k8s proxy only, never on /v1
    return tokens


@pytest.mark.parametrize(("method", "template"), PROTECTED)
def test_route_rejects_missing_bad_expired_and_revoked_tokens(
    world: World, session_factory: sessionmaker[Session], method: str, template: str
) -> None:
    access = MATRIX[(method, template)]
    path = concrete_path(world, template, "admin")
    response = world.client.request(method, path, json=access.body)
    assert response.status_code == 401, response.text
    assert error_name(response) in ("unauthenticated", None)
    response = world.client.request(method, path, json=access.body, headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    for kind, token in _bad_tokens(world, session_factory, k8s=access.level == "k8s").items():
        response = world.client.request(method, path, json=access.body, headers=bearer(token))
        assert response.status_code == 401, (kind, response.text)


@pytest.mark.parametrize("who", PRINCIPALS)
@pytest.mark.parametrize(("method", "template"), PROTECTED)
def test_route_grants_or_denies_each_role_as_designed(
    world: World, method: str, template: str, who: str
) -> None:
    access = MATRIX[(method, template)]
    expected = EXPECTED[access.level][who]
    response = world.call(who, method, concrete_path(world, template, who), access.body)
    if expected is None:
        assert 200 <= response.status_code < 300, f"{who} {method} {template}: {response.text}"
    else:
        assert response.status_code == expected, f"{who} {method} {template}: {response.text}"
        names = {403: "forbidden", 404: "not_found", 409: "conflict", 503: "service_unavailable"}
        assert error_name(response) in (names[expected], None)
