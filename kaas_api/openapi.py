"""The OpenAPI document kaas serves: FastAPI's, made to tell the truth about errors and path parameters.

Owned by ``kaas_api``; ``create_app`` builds a ``KaasApi``, whose ``openapi()`` post-processes FastAPI's
document once:

- Every error answer of every operation is documented with ``kaas_api.schemas.ErrorBody`` (what the handlers
  in ``kaas_api.app`` really send), in place of FastAPI's ``HTTPValidationError``.
- The statuses an operation can answer are derived from what the route is made of, so a new route documents
  them without anyone remembering to: a dependency marked with ``kaas_api.errors.answers`` (authentication
  401, admin-only 403, the unit of work's commit 409 on writes), path parameters (404: no such resource, or
  one the caller may not see), query parameters (422), a body (400 unreadable, 413 too large, 422). A write
  under ``/v1/projects/{project}`` adds 403: a viewer reads a project, changing it needs a higher role.
  What only a service knows (a 409 of a GET, a 403 for naming another user) the route declares with
  ``responses=errors(...)``.
- Path parameters carry the pattern and lengths their lookups accept (``PATH_PARAMETERS``, built from the
  constants of ``kaas_api.validation``).

Routes that document their own errors with another body (the k8s proxy's Kubernetes ``Status``) keep them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute

from kaas_api.schemas import ErrorBody
from kaas_api.validation import DNS_LABEL_SCHEMA, UUID_SCHEMA

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STATUS_DESCRIPTIONS = {
    400: "The body could not be read as JSON text (for instance, it is not UTF-8).",
    401: "No token, or an unknown, expired or revoked one (`WWW-Authenticate: Bearer`).",
    403: "The token is valid, but its user's role does not allow this.",
    404: "No such resource, or one the caller may not see.",
    409: "The change conflicts with the current state: a name in use, an operation under way, a quota.",
    413: "The request body is larger than the server accepts.",
    422: "The request breaks the operation's schema, or a rule the schema cannot state; `detail` lists "
    "each problem.",
    503: "A service kaas depends on is not available now; retry later.",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_NAME = {**DNS_LABEL_SCHEMA}
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "project": {**_NAME, "description": "The project's name or id."},
    "cluster": {**_NAME, "description": "The cluster's id, or the name of a live cluster."},
    "pool": {**_NAME, "description": "The node pool's name."},
    "region": {**_NAME, "description": "The region's name or id."},
    "user": {**_NAME, "description": "The user's name."},
    **{
        name: {**UUID_SCHEMA}
        for name in (
            "cluster_id",
            "delivery_id",
            "kubeconfig_token_id",
            "operation_id",
            "token_id",
            "webhook_id",
        )
    },
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for statuses a route answers that its parts do not show (its body is ``ErrorBody``)."""
    return {status: {"description": STATUS_DESCRIPTIONS[status]} for status in statuses}


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    """The route's own dependant and every dependency below it."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def api_routes(routes: list[BaseRoute]) -> Iterator[RouteContext]:
    """Every API route as served (FastAPI keeps included routers nested; their routes carry full paths)."""
    for context in iter_route_contexts(routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def derived_statuses(route: RouteContext, method: str) -> set[int]:
    """The error statuses a route's parts can answer with (see the module docstring)."""
    write = method in WRITES
    statuses: set[int] = set()
    path_names: set[str] = set()
    for dependant in _dependants(route.dependant):
        marked = getattr(dependant.call, "__kaas_answers__", None)
        if marked is not None:
            answers, writes_only = marked
            if write or not writes_only:
                statuses |= answers
        path_names |= {param.name for param in dependant.path_params}
        if dependant.query_params or dependant.header_params:
            statuses.add(422)
        if dependant.body_params:
            statuses |= {400, 413, 422}
    if path_names:
        statuses.add(404)
    if write and "project" in path_names and (route.path_format or "").startswith("/v1/projects/{project}"):
        statuses.add(403)
    return statuses


def _is_fastapi_validation_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def document(spec: dict[str, Any], routes: list[BaseRoute]) -> dict[str, Any]:
    """Add the error answers and path parameter schemas to FastAPI's document (in place; returned)."""
    for route in api_routes(routes):
        if not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            operation = spec["paths"][route.path_format][method.lower()]
            responses: dict[str, Any] = operation["responses"]
            for status, response in list(responses.items()):
                if _is_fastapi_validation_error(response):
                    del responses[status]
            for code in sorted(derived_statuses(route, method)):
                responses.setdefault(str(code), {"description": STATUS_DESCRIPTIONS[code]})
            for status, response in responses.items():
                if status[0] in "45" and "content" not in response:
                    response["content"] = {"application/json": {"schema": _ERROR_REF}}
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETERS:
                    documented = PATH_PARAMETERS[parameter["name"]]
                    parameter["schema"] = {key: v for key, v in documented.items() if key != "description"}
                    if "description" in documented:
                        parameter["description"] = documented["description"]
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    return spec


class KaasApi(FastAPI):
    """FastAPI whose ``openapi()`` is ``document``-ed (once per generated document)."""

    _documented: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        spec = super().openapi()
        if spec is not self._documented:
            self._documented = document(spec, self.routes)
        return spec
