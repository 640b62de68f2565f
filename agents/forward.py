"""Forwards one proxied kubectl request to the agent's OWN apiserver, as the requesting kaas user.

Owned by the agent. The tunnel runtime calls ``ApiserverForwarder.forward`` once per request stream it
receives from kaas and relays the ``ForwardResponse`` back; ``agents.status`` uses ``get_json`` for the
agent's own reads.

Security rules, enforced here whatever the hops before the agent checked:
- the target is a path (plus query) on the configured apiserver: absolute URLs, scheme-relative ``//host``
  and any path that is not canonical (``agents.tunnel.paths``: dot segments, escaped separators,
  backslashes, ``;`` parameters, control characters) are refused with 400, so the agent never dials
  anything but its own apiserver, and the path it dials is the one kaas authorized;
- every incoming ``Authorization``, ``Impersonate-*``, ``X-Remote-*`` and hop-by-hop header is dropped; the
  agent adds its own credentials and ``Impersonate-User`` / one ``Impersonate-Group`` per group, so the user
  cluster's RBAC decides per kaas user;
- a request without a user is refused with 403: nothing is ever forwarded un-impersonated; nor is one whose
  user lacks the ``kaas:`` prefix (``provider/bootstrap/manifests/kaas-rbac.yaml`` explains why: the agent
  may impersonate any user name, so it must never speak for an in-cluster identity such as ``system:...``).

Bodies stream both ways (watches and huge lists are never buffered); closing a ``ForwardResponse`` closes
the upstream response. Connect errors answer 502 and timeouts 504, as Kubernetes ``Status`` objects. A
request is sent again only when that is safe (``may_send_again``, ``refused_for_now``): a closed idle
keep-alive connection, or a 503 with ``Retry-After``, from an apiserver stopping in a rolling upgrade then
costs the client nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import ssl
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import httpx

from agents.kube import ApiserverConnection
from agents.tunnel.headers import HOP_BY_HOP, RESTREAMED, dropped_from_request
from agents.tunnel.kube_status import kube_status
from agents.tunnel.paths import NonCanonicalPath, check_canonical_target

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_RETRY_AFTER_SECONDS = 2.0
MAX_TARGET_LENGTH = 8192
KAAS_USER_PREFIX = "kaas:"


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")


class ForwardError(Exception):
    """Base of the forwarder's errors."""


class InvalidForwardRequest(ForwardError):
    """The request cannot be forwarded as given; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 400, reason: str = "BadRequest") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class UpstreamError(ForwardError):
    """The apiserver could not be reached, timed out, or broke the connection."""


class UpstreamStreamError(UpstreamError):
    """The apiserver's response body broke off after its headers were relayed."""


class ApiserverRequestError(ForwardError):
    """The agent's own request was answered with a non-2xx status (``status``; ``body`` is the Status)."""

    def __init__(self, message: str, *, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True, kw_only=True)
class ForwardRequest:
    """One proxied request: ``path`` is the path plus query on the apiserver (``/api/v1/pods?watch=1``)."""

    method: str
    path: str
    user: str
    groups: Sequence[str] = ()
    headers: Sequence[tuple[str, str]] | Mapping[str, str] = ()
    body: AsyncIterable[bytes] | None = None


class ResponseBody:
    """A response body as an async iterator of byte chunks; ``aclose`` releases the upstream response."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        return None


class BytesBody(ResponseBody):
    """A body already in memory (the forwarder's own answers)."""

    def __init__(self, content: bytes) -> None:
        self._content: bytes | None = content

    async def __anext__(self) -> bytes:
        content, self._content = self._content, None
        if not content:
            raise StopAsyncIteration
        return content

    async def aclose(self) -> None:
        self._content = None


class UpstreamBody(ResponseBody):
    """The apiserver's response body, relayed chunk by chunk as it arrives (raw, still content-encoded)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_raw()
        self._closed = False

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except httpx.TimeoutException as exc:
            await self.aclose()
            raise UpstreamStreamError("the apiserver stopped sending the response body (timeout)") from exc
        except httpx.HTTPError as exc:
            await self.aclose()
            raise UpstreamStreamError(f"the apiserver response body broke off: {exc}") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close_chunks = getattr(self._chunks, "aclose", None)
            if close_chunks is not None:
                await close_chunks()
        finally:
            await self._response.aclose()


@dataclass(kw_only=True)
class ForwardResponse:
    """The apiserver's answer: status, end-to-end headers (lower-case names) and a streamed body.

    Always close it (``await response.aclose()`` or ``async with``), also when the body is not read.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: ResponseBody = field(default_factory=ResponseBody)

    async def aclose(self) -> None:
        await self.body.aclose()

    async def read(self) -> bytes:
        """The whole body (for small answers only; never for a watch) and close."""
        try:
            return b"".join([chunk async for chunk in self.body])
        finally:
            await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def status_response(code: int, reason: str, message: str) -> ForwardResponse:
    """A ``ForwardResponse`` the forwarder answers itself, with a ``Status`` JSON body."""
    content = json.dumps(kube_status(code, message, reason=reason)).encode()
    return ForwardResponse(
        status=code,
        headers=[("content-type", "application/json"), ("content-length", str(len(content)))],
        body=BytesBody(content),
    )


def validate_target(target: str) -> str:
    """``target`` if it is a canonical path (plus query) on the apiserver; else ``InvalidForwardRequest``.

    The rule is ``agents.tunnel.paths``'s, the one the API and the tunnel server apply too: a path that some
    parser could read differently never reaches the apiserver, even if a hop before the agent let it by.
    """
    if not target.startswith("/") or target.startswith("//"):
        raise InvalidForwardRequest(f"the request target must be a path on the apiserver: {target[:256]!r}")
    if len(target) > MAX_TARGET_LENGTH:
        raise InvalidForwardRequest("the request target is too long")
    try:
        check_canonical_target(target)
    except NonCanonicalPath as exc:
        raise InvalidForwardRequest(f"the request target is not canonical: {exc}") from exc
    return target


def is_streaming_target(target: str) -> bool:
    """Watches and followed logs stay open for long: they get the long read timeout."""
    parts = urlsplit(target)
    if "/watch/" in parts.path:
        return True
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return query.get("watch", "").lower() in ("1", "true") or query.get("follow", "").lower() in ("1", "true")


def refused_for_now(response: httpx.Response) -> float | None:
    """How long to wait before sending again a request that ``response`` refused without acting on it: a
    503 with ``Retry-After`` (an apiserver shutting down answers so to requests that arrive on a connection
    it has not closed yet; client-go retries these), at most ``MAX_RETRY_AFTER_SECONDS``; else None."""
    if response.status_code != 503:
        return None
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def may_send_again(method: str, *, has_body: bool, error: httpx.HTTPError) -> bool:
    """Whether a request that failed with ``error`` may be sent once more: never with a body stream (it
    was consumed, and replaying it is not ours to decide); a connection that could not be made sent
    nothing; a connection that broke before an answer (the server closed an idle keep-alive connection as
    the request went out, or reset it) may have delivered the request, so only an idempotent method goes
    again (RFC 9110, 9.2.2). A timeout is never retried: the apiserver may still be working on it."""
    if has_body or isinstance(error, httpx.TimeoutException):
        return False
    if isinstance(error, httpx.ConnectError):
        return True
    broken = isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
    return broken and method.upper() in IDEMPOTENT_METHODS


def _validate_identity(user: str, groups: Sequence[str], *, user_prefix: str) -> tuple[str, list[str]]:
    if not user or not user.strip():
        raise InvalidForwardRequest(
            "the request carries no kaas user; it is never forwarded un-impersonated",
            status=403,
            reason="Forbidden",
        )
    if not user.startswith(user_prefix) or user == user_prefix:
        raise InvalidForwardRequest(
            f"the agent only impersonates kaas users (names starting with {user_prefix!r})",
            status=403,
            reason="Forbidden",
        )
    names = [user, *groups]
    if any(not name or _BAD_VALUE_CHARS.search(name) for name in names):
        raise InvalidForwardRequest("user and group names must be non-empty single-line strings")
    return user, list(groups)


def _header_pairs(headers: Sequence[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, including those a ``Connection`` header names."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    ]


def upstream_headers(
    headers: Sequence[tuple[str, str]] | Mapping[str, str], *, user: str, groups: Sequence[str]
) -> list[tuple[str, str]]:
    """The client's end-to-end headers minus every identity header, plus the impersonation headers."""
    kept: list[tuple[str, str]] = []
    for name, value in _end_to_end(_header_pairs(headers)):
        lower = name.lower()
        # the body is re-streamed (chunked), so the client's Content-Length goes too
        if dropped_from_request(lower) or lower in RESTREAMED:
            continue
        if not _HEADER_NAME.match(name) or _BAD_VALUE_CHARS.search(value):
            raise InvalidForwardRequest(f"invalid request header {name!r}")
        kept.append((name, value))
    if not any(name.lower() == "accept-encoding" for name, _ in kept):
        # Bodies are relayed raw; never ask for a compression the client did not ask for.
        kept.append(("Accept-Encoding", "identity"))
    kept.append(("Impersonate-User", user))
    kept.extend(("Impersonate-Group", group) for group in groups)
    return kept


@functools.cache
def _plain_http_context() -> ssl.SSLContext:
    """The TLS settings of a forwarder to an http:// apiserver, which uses none: one per process.

    httpx builds a context for every client, and ``verify=True`` loads the whole CA bundle, ~50 ms of CPU on
    a loaded machine. A thousand simulated agents in one process (nodesim, the tunnel benchmark) stalled
    their event loop for over 20 s that way, long enough for their tunnel handshakes to time out.
    """
    return httpx.create_ssl_context()


class ApiserverForwarder:
    """Forwards requests to one apiserver over a pooled, bounded ``httpx.AsyncClient``.

    At most ``max_connections`` at once: each watch or followed log holds one for its whole life, and a
    cluster's controllers and dashboards may hold hundreds through kaas, so the bound is the tunnel
    session's own limit of streams (``max_streams_per_session``, 1024), not a small pool's.

    Use as ``async with ApiserverForwarder(connection) as forwarder:``; ``aclose`` closes the pool.
    """

    def __init__(
        self,
        connection: ApiserverConnection,
        *,
        connect_timeout_seconds: float = 5.0,
        read_timeout_seconds: float = 60.0,
        write_timeout_seconds: float = 60.0,
        pool_timeout_seconds: float = 10.0,
        stream_read_timeout_seconds: float = 3900.0,
        max_connections: int = 1024,
        max_keepalive_connections: int = 32,
        keepalive_expiry_seconds: float = 30.0,
        user_prefix: str = KAAS_USER_PREFIX,
    ) -> None:
        self._connection = connection
        self._user_prefix = user_prefix
        self._max_attempts = max_keepalive_connections + 1  # see _send
        self._timeout = httpx.Timeout(
            connect=connect_timeout_seconds,
            read=read_timeout_seconds,
            write=write_timeout_seconds,
            pool=pool_timeout_seconds,
        )
        # Kubernetes watches send nothing while nothing changes; the apiserver ends them within an hour.
        self._stream_timeout = httpx.Timeout(
            connect=connect_timeout_seconds,
            read=stream_read_timeout_seconds,
            write=write_timeout_seconds,
            pool=pool_timeout_seconds,
        )
        self._client = httpx.AsyncClient(
            verify=connection.ssl_context if connection.ssl_context is not None else _plain_http_context(),
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_connections,
                keepalive_expiry=keepalive_expiry_seconds,
            ),
            headers={"User-Agent": "kaas-agent"},
            # every user's requests share this client: a cookie one user's answer set must never go out
            # with another's request, so the jar keeps none (a policy that allows no domain)
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            follow_redirects=False,
            trust_env=False,  # never an HTTP(S)_PROXY or .netrc: only the apiserver, only our credentials
        )

    @property
    def base_url(self) -> str:
        return self._connection.base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def connection(self) -> ApiserverConnection:
        return self._connection

    def identity_headers(self, user: str, groups: Sequence[str]) -> list[tuple[str, str]]:
        """The agent's credentials plus the impersonation of ``user`` and ``groups`` (validated as for
        ``forward``; ``InvalidForwardRequest`` when they are not kaas's). For requests the agent makes
        without ``forward``, such as WebSocket upgrades (``agents.websocket``)."""
        valid_user, valid_groups = _validate_identity(user, groups, user_prefix=self._user_prefix)
        impersonation = [("Impersonate-User", valid_user)]
        impersonation.extend(("Impersonate-Group", group) for group in valid_groups)
        return self._own_headers(impersonation)

    def _own_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        authorization = self._connection.authorization()
        if authorization is not None:
            headers.append(("Authorization", authorization))
        return headers

    async def _send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: AsyncIterable[bytes] | None
    ) -> httpx.Response:
        """Send, and again when that is safe (``may_send_again``): an apiserver that stops (a control
        plane replaced in an upgrade) closes all its idle keep-alive connections at once, and a request that
        went out on one just then is answered by nothing. Each such failure discards one pooled connection,
        and the next attempt may take another that is closing too (its close not seen yet): as Go's
        transport does, the request goes again while that is so, at most once per pooled connection and
        once more on a new one. A connection that could not be made is tried once more, and a request the
        apiserver refused for now (``refused_for_now``: it is shutting down) goes again after the wait it
        asked for."""
        timeout = self._stream_timeout if is_streaming_target(target) else self._timeout
        for attempt in range(1, self._max_attempts + 1):
            request = self._client.build_request(
                method, self._connection.base_url + target, headers=headers, content=body, timeout=timeout
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise UpstreamError(f"the cluster's apiserver timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                again = may_send_again(method, has_body=body is not None, error=exc)
                if isinstance(exc, httpx.ConnectError):
                    again = again and attempt == 1
                if again and attempt < self._max_attempts:
                    continue
                raise UpstreamError(
                    f"the cluster's apiserver is unreachable from the kaas agent: {exc}"
                ) from exc
            delay = refused_for_now(response)
            if delay is None or attempt == self._max_attempts or body is not None or (
                method.upper() not in IDEMPOTENT_METHODS
            ):
                return response
            await response.aclose()
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def forward(self, request: ForwardRequest) -> ForwardResponse:
        """Send ``request`` to the apiserver as its user; never raises for upstream or request problems."""
        try:
            target = validate_target(request.path)
            method = request.method.upper()
            if method not in ALLOWED_METHODS:
                raise InvalidForwardRequest(f"method {request.method!r} is not forwarded", status=405,
                                            reason="MethodNotAllowed")
            user, groups = _validate_identity(request.user, request.groups, user_prefix=self._user_prefix)
            headers = self._own_headers(upstream_headers(request.headers, user=user, groups=groups))
        except InvalidForwardRequest as exc:
            return status_response(exc.status, exc.reason, str(exc))
        try:
            response = await self._send(method, target, headers, request.body)
        except UpstreamError as exc:
            if isinstance(exc.__cause__, httpx.TimeoutException):
                return status_response(504, "Timeout", str(exc))
            return status_response(502, "ServiceUnavailable", str(exc))
        return ForwardResponse(
            status=response.status_code,
            headers=_end_to_end(response.headers.multi_items()),
            body=UpstreamBody(response),
        )

    async def get_json(self, path: str) -> Any:
        """GET ``path`` as the agent itself (no impersonation) and decode the JSON answer.

        Raises ``UpstreamError`` when the apiserver is unreachable and ``ApiserverRequestError`` on non-2xx.
        """
        target = validate_target(path)
        headers = self._own_headers([("Accept", "application/json"), ("Accept-Encoding", "identity")])
        response = await self._send("GET", target, headers, None)
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise UpstreamError(f"reading {path} from the apiserver failed: {exc}") from exc
        finally:
            await response.aclose()
        try:
            decoded = json.loads(content) if content else None
        except ValueError as exc:
            if response.is_success:
                raise ApiserverRequestError(
                    f"GET {path}: the apiserver answered non-JSON", status=response.status_code, body=None
                ) from exc
            decoded = None
        if not response.is_success:
            message = decoded.get("message") if isinstance(decoded, dict) else None
            raise ApiserverRequestError(
                f"GET {path}: {response.status_code} {message or response.reason_phrase}",
                status=response.status_code,
                body=decoded,
            )
        return decoded
