"""The FastAPI application factory: routers, error rendering, the per-app context.

Called by the composition root (``kaas_cli``: ``kaas api`` and ``kaas up``) and by the tests, which pass
their own session factory and dispatcher. Every error leaves as ``kaas_api.schemas.ErrorBody``
(``{"error", "message", "detail"}``, documented as such by ``kaas_api.openapi``): domain errors
(``kaas_api.errors``) with their status, request validation as 422 ``invalid_input`` whose ``detail`` lists
``{"field", "message", "type"}`` (field paths like ``node_pools[0].count``), unknown routes and methods as
``not_found`` / ``method_not_allowed`` (a 405's ``Allow`` names every method of the path).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from agents.tunnel.kube_status import kube_status
from kaas_api import health
from kaas_api.admin import endpoints as admin
from kaas_api.audit.middleware import AuditMiddleware, add_audit_detail
from kaas_api.auth import endpoints as auth
from kaas_api.auth.principal_cache import PrincipalCache
from kaas_api.clusters import endpoints as clusters
from kaas_api.clusters.view_cache import ClusterViewCache, install_view_hooks
from kaas_api.config import ApiSettings
from kaas_api.dashboard import routes as dashboard
from kaas_api.deps import AppContext
from kaas_api.dispatch import TaskDispatcher
from kaas_api.docs import mount_docs
from kaas_api.errors import InvalidInput, KaasError
from kaas_api.k8s import proxy as k8s_proxy
from kaas_api.k8s.access import record_last_use
from kaas_api.k8s.status import KubeStatusError, kube_status_handler
from kaas_api.kubeconfig import endpoints as kubeconfig
from kaas_api.observability import endpoints as observability
from kaas_api.observability.metrics import ApiMetrics, HttpMetricsMiddleware, KaasStateCollector
from kaas_api.openapi import KaasApi, api_routes
from kaas_api.operations import endpoints as operations
from kaas_api.projects import endpoints as projects
from kaas_api.regions import endpoints as regions
from kaas_api.schemas import ErrorBody
from kaas_api.security_headers import SecurityHeadersMiddleware, is_dashboard_path
from kaas_api.users import endpoints as users
from kaas_api.webhooks import endpoints as webhooks
from kaas_core.credential_cache import (
    CredentialCache,
    InProcessRevocationFeed,
    RevocationFeed,
    install_revocation_hooks,
)
from kaas_core.internal_hop import assertion_key
from kaas_core.request_context import RequestIdMiddleware
from kaas_core.serving.body_limit import BodyLimitMiddleware, BodyRule, Refusal
from kaas_core.tunnel_registry import InMemoryTunnelRegistry, TunnelRegistry

log = logging.getLogger(__name__)

_HTTP_ERRORS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def error_body(error: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The body of every error: ``ErrorBody``, so what is sent is what the spec documents."""
    return ErrorBody(error=error, message=message, detail=detail).model_dump(mode="json")


def _is_dashboard(request: Request) -> bool:
    return is_dashboard_path(request.url.path)


async def _kaas_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KaasError)
    add_audit_detail(request, reason=exc.message)
    if _is_dashboard(request):
        return dashboard.render_error(request, exc)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(
        status_code=exc.status_code, content=error_body(exc.error, exc.message, exc.detail), headers=headers
    )


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic location as kaas writes field paths: ``node_pools[0].labels["a b"]``, a query or path
    parameter by its bare name, ``""`` for the body as a whole."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue  # the message says it is the key that is wrong
        elif _IDENTIFIER.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{json.dumps(part, ensure_ascii=False)}]"
    return path


def _problem(error: Any) -> dict[str, Any]:
    if error.get("type") == "json_invalid":
        # FastAPI puts the character offset where a field name goes; it belongs in the message
        reason = (error.get("ctx") or {}).get("error", "malformed")
        position = error.get("loc", ("body", "?"))[-1]
        message = f"the request body is not valid JSON: {reason} at character {position}"
        return {"field": "", "message": message, "type": "json_invalid"}
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return {"field": field_path(error.get("loc", ())), "message": message, "type": error.get("type")}


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    listed = errors[: request.app.state.kaas.settings.max_validation_errors]  # the answer stays small
    problems = [_problem(error) for error in listed]
    summary = "; ".join(
        f"{p['field']}: {p['message']}" if p["field"] else str(p["message"]) for p in problems
    )
    if len(errors) > len(listed):
        summary += f"; and {len(errors) - len(listed)} more problems"
    add_audit_detail(request, reason=summary or "invalid input")
    if _is_dashboard(request):
        return dashboard.render_error(request, InvalidInput(summary or "invalid input"))
    return JSONResponse(
        status_code=422, content=error_body("invalid_input", summary or "invalid input", problems)
    )


def allowed_methods(request: Request) -> str:
    """Every method some route of this path answers: Starlette's 405 names only those of the first route
    that matched the path, and FastAPI makes one route per method."""
    methods: set[str] = set()
    for route in api_routes(request.app.routes):
        if route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and request.url.path.startswith(k8s_proxy.PROXY_PREFIX + "/"):
        # a proxy path no route matches (a raw newline in it): still a Status, as the proxy documents
        return JSONResponse(status_code=404, content=kube_status(404, "no such Kubernetes API path"))
    error = _HTTP_ERRORS.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI's answer to a body json.loads could not even decode (not UTF-8, nested too deeply)
        message = f"the request body could not be read as JSON text ({type(exc.__cause__).__name__})"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
        message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    add_audit_detail(request, reason=message)
    return JSONResponse(status_code=exc.status_code, content=error_body(error, message), headers=headers)


def _body_rules(settings: ApiSettings) -> list[BodyRule]:
    """The k8s proxy streams bodies up to its own cap and answers in ``Status`` objects; the rest is JSON and
    forms (``kaas_core.serving.body_limit``)."""

    def as_status(refusal: Refusal) -> dict[str, Any]:
        return kube_status(refusal.status, refusal.message)

    def as_error(refusal: Refusal) -> dict[str, Any]:
        return error_body(refusal.error, refusal.message, refusal.detail)

    return [
        BodyRule(
            prefix=k8s_proxy.PROXY_PREFIX + "/", max_bytes=settings.k8s_proxy_max_body_bytes, render=as_status
        ),
        BodyRule(
            prefix="",
            max_bytes=settings.http_max_body_bytes,
            max_json_values=settings.http_max_json_values,
            render=as_error,
        ),
    ]


def create_app(
    settings: ApiSettings,
    *,
    session_factory: sessionmaker[Session],
    dispatcher: TaskDispatcher,
    tunnel_registry: TunnelRegistry | None = None,
    metrics_registry: CollectorRegistry | None = None,
    revocation_feed: RevocationFeed | None = None,
) -> FastAPI:
    """Build the API. ``session_factory`` gives one session per request; ``dispatcher`` sends reconciles.

    ``tunnel_registry`` tells the k8s proxy which tunnel server holds a cluster's agent (the Redis one in a
    deployment, the tunnel server's own in-memory one in the embedded mode); without one, no cluster is
    reachable through ``/k8s`` (503) until the composition root passes it.

    ``metrics_registry`` is where ``/metrics`` registers and reads from: a fresh one per app unless given
    (``kaas up`` passes the one the provider and the tunnel server of the same process register on).

    ``revocation_feed`` carries credential revocations between processes (``kaas_core.credential_cache``:
    the Redis one in a deployment, the process's own otherwise); this app's commits publish to it.
    """
    app = KaasApi(
        title="kaas",
        version="0.1.0",
        description="Kubernetes clusters on OpenStack. Authenticate with `Authorization: Bearer <token>`.",
        docs_url=None,  # served offline by kaas_api.docs
        redoc_url=None,
    )
    mount_docs(app)
    feed = revocation_feed if revocation_feed is not None else InProcessRevocationFeed()
    app.state.kaas = AppContext(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        read_threads=anyio.CapacityLimiter(settings.database_pool_size),
        principals=PrincipalCache(feed, ttl_seconds=settings.credential_cache_seconds),
        cluster_views=ClusterViewCache(feed, ttl_seconds=settings.cluster_view_cache_seconds),
    )
    install_view_hooks(session_factory, app.state.kaas.cluster_views)
    install_revocation_hooks(session_factory, feed)
    app.state.kaas_k8s = k8s_proxy.K8sProxyContext(
        registry=tunnel_registry if tunnel_registry is not None else InMemoryTunnelRegistry(),
        assertion_key=assertion_key(settings.tunnel_internal_secret.get_secret_value()),
        credentials=CredentialCache(
            session_factory, feed=feed, ttl_seconds=settings.credential_cache_seconds, on_miss=record_last_use
        ),
        connect_timeout_seconds=settings.k8s_proxy_connect_timeout_seconds,
        read_timeout_seconds=settings.k8s_proxy_read_timeout_seconds,
    )
    api_metrics = ApiMetrics(metrics_registry if metrics_registry is not None else CollectorRegistry())
    api_metrics.registry.register(KaasStateCollector(session_factory, broker_url=settings.broker_url))
    app.state.kaas_metrics = api_metrics
    app.add_exception_handler(KaasError, _kaas_error)
    app.add_exception_handler(KubeStatusError, kube_status_handler)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(health.router)
    # routers are matched in this order, each trying its routes: the cluster calls are the most frequent
    # (no two routers serve one path, so the order changes nothing else but the OpenAPI document's)
    app.include_router(clusters.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(projects.router)
    app.include_router(regions.router)
    app.include_router(operations.router)
    app.include_router(kubeconfig.router)
    app.include_router(k8s_proxy.router)
    app.include_router(observability.router)
    app.include_router(webhooks.router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    # the last one added runs first: the request id exists before the audit event that records it, and
    # bodies refused for their size are counted and audited too
    app.add_middleware(BodyLimitMiddleware, rules=_body_rules(settings))
    app.add_middleware(HttpMetricsMiddleware, metrics=api_metrics)
    app.add_middleware(AuditMiddleware, session_factory=session_factory)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: every response, errors included
    return app
