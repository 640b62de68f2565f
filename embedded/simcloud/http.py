"""The HTTP plumbing shared by the simulated services: a small regex router, the request context, auth.

Each service module (``identity``, ``compute``, ``network``, ``image``, ``loadbalancer``, ``admin``) registers
its routes on a ``Router``; ``simcloud.app`` builds the Starlette app from it. Every handler runs under
``sim.lock`` after the due transitions were applied, so a handler sees one consistent state. Handlers are
synchronous and fast (all in memory).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simcloud.errors import ApiError, keystone_error
from simcloud.state import Identity, SimCloud

# services an injected token refusal leaves alone: identity itself and the simulator's admin API
TOKEN_REFUSAL_EXEMPT = frozenset({"identity", "sim"})
NOVA_MIN_VERSION = (2, 1)
NOVA_MAX_VERSION = (2, 100)


@dataclass
class Ctx:
    """One request as a handler sees it."""

    sim: SimCloud
    identity: Identity | None
    method: str
    query: list[tuple[str, str]]
    body: Any
    base_url: str  # scheme://host:port, as the client reached us
    headers: dict[str, str]
    microversion: tuple[int, int] = NOVA_MIN_VERSION
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def who(self) -> Identity:
        assert self.identity is not None
        return self.identity

    def arg(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def args(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]

    def mv_at_least(self, major: int, minor: int) -> bool:
        return self.microversion >= (major, minor)


Handler = Callable[..., Response]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    service: str
    public: bool


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def empty(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


class Router:
    """Routes by method and a path pattern with ``{name}`` segments; trailing slashes do not matter."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, path: str, handler: Handler, *, service: str, public: bool = False) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path.rstrip("/") or "/")
        self._routes.append(_Route(method, re.compile(regex), handler, service, public))

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | bool | None:
        """The route and its path parameters; False when only the method is wrong; None when no path fits."""
        path_matched = False
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            if route.method == method or (route.method == "GET" and method == "HEAD"):
                return route, found.groupdict()
            path_matched = True
        return False if path_matched else None


def parse_microversion(headers: dict[str, str]) -> tuple[int, int] | None:
    """Nova's requested microversion from either header; None when it is malformed."""
    raw = None
    modern = headers.get("openstack-api-version")
    if modern:
        for part in modern.split(","):
            words = part.strip().split()
            if len(words) == 2 and words[0].lower() == "compute":
                raw = words[1]
    if raw is None:
        raw = headers.get("x-openstack-nova-api-version")
    if raw is None:
        return NOVA_MIN_VERSION
    if raw.strip().lower() == "latest":
        return NOVA_MAX_VERSION
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", raw)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def make_dispatcher(sim: SimCloud, router: Router) -> Callable[[Request], Any]:
    async def dispatch(request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        found = router.match(request.method, path)
        if found is None:
            return json_response({"error": {"code": 404, "message": f"No such path {path}"}}, 404)
        if found is False:
            return json_response({"error": {"code": 405, "message": "Method not allowed"}}, 405)
        assert isinstance(found, tuple)
        route, params = found
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return json_response({"error": {"code": 400, "message": "Malformed JSON body"}}, 400)
        headers = {key.lower(): value for key, value in request.headers.items()}
        identity = sim.identify(headers.get("x-auth-token"))
        if identity is not None and route.service not in TOKEN_REFUSAL_EXEMPT and sim.take_token_refusal():
            identity = None  # an injected refusal (SimCloud.refuse_next_tokens): a valid token refused once
        if identity is None and not route.public:
            err = keystone_error(401, "The request you have made requires authentication.")
            return json_response(
                err.body, 401, {"WWW-Authenticate": f'Keystone uri="{_base(request)}/identity"'}
            )
        ctx = Ctx(
            sim=sim,
            identity=identity,
            method=request.method,
            query=list(request.query_params.multi_items()),
            body=body,
            base_url=_base(request),
            headers=headers,
        )
        if route.service == "compute":
            version = parse_microversion(headers)
            if version is None or not NOVA_MIN_VERSION <= version <= NOVA_MAX_VERSION:
                return json_response({"computeFault": {"code": 406, "message": "Version not supported"}}, 406)
            ctx.microversion = version
            text = f"{version[0]}.{version[1]}"
            ctx.response_headers.update(
                {
                    "OpenStack-API-Version": f"compute {text}",
                    "X-OpenStack-Nova-API-Version": text,
                    "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
                }
            )
        with sim.lock:
            sim.advance_locked()
            try:
                response = route.handler(ctx, **params)
            except ApiError as exc:
                response = json_response(exc.body, exc.status)
            if request.method != "GET":
                sim.mark_changed()  # tokens issued, resources made or changed: the next snapshot keeps them
                if sim.durable:
                    sim.save()  # on disk before the answer, as a real cloud's database commit
        response.headers.update(ctx.response_headers)
        response.headers.setdefault("x-openstack-request-id", "req-" + _request_id())
        sim.wake()
        return response

    return dispatch


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _request_id() -> str:
    import uuid

    return str(uuid.uuid4())
