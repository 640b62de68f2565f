"""The forwarder against a real Kubernetes stand-in: impersonation, header stripping, RBAC, streams."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.forward import (
    ApiserverForwarder,
    ForwardRequest,
    ForwardResponse,
    InvalidForwardRequest,
    upstream_headers,
    validate_target,
)
from agents.kube import ApiserverConnection, StaticToken
from simcloud.kube.testing import KubeStandinHandle
from tests.agents.conftest import MEMBER_GROUPS, VIEWER_GROUPS, free_port, silent_listener

WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
JSON_HEADERS = [("Content-Type", "application/json"), ("Accept", "application/json")]


async def json_body(document: dict[str, Any], *, chunk_size: int = 7) -> AsyncIterator[bytes]:
    """A request body streamed in small chunks, as the tunnel delivers it."""
    raw = json.dumps(document).encode()
    for start in range(0, len(raw), chunk_size):
        yield raw[start : start + chunk_size]


async def read_json(response: ForwardResponse) -> Any:
    return json.loads(await response.read())


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


async def whoami(forwarder: ApiserverForwarder, **kwargs: Any) -> ForwardResponse:
    return await forwarder.forward(
        ForwardRequest(
            method="POST",
            path=WHOAMI,
            body=json_body({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
            **kwargs,
        )
    )


# --- impersonation -------------------------------------------------------------------------------------


async def test_request_runs_as_the_kaas_user_and_groups(forwarder: ApiserverForwarder) -> None:
    response = await whoami(forwarder, user="kaas:alice", groups=list(VIEWER_GROUPS), headers=JSON_HEADERS)

    assert response.status == 201
    user_info = (await read_json(response))["status"]["userInfo"]
    assert user_info["username"] == "kaas:alice"
    assert set(user_info["groups"]) == {*VIEWER_GROUPS, "system:authenticated"}


async def test_client_impersonation_headers_never_reach_the_apiserver(forwarder: ApiserverForwarder) -> None:
    smuggled = [
        *JSON_HEADERS,
        ("Impersonate-User", "system:admin"),
        ("impersonate-group", "system:masters"),
        ("IMPERSONATE-GROUP", "system:masters"),
        ("Impersonate-Uid", "0"),
        ("Impersonate-Extra-Scopes", "everything"),
        ("X-Remote-User", "system:admin"),
        ("X-Remote-Group", "system:masters"),
    ]

    response = await whoami(forwarder, user="kaas:alice", groups=list(VIEWER_GROUPS), headers=smuggled)

    assert response.status == 201
    user_info = (await read_json(response))["status"]["userInfo"]
    assert user_info["username"] == "kaas:alice"
    assert "system:masters" not in user_info["groups"]
    assert "uid" not in user_info
    assert "extra" not in user_info


async def test_viewer_with_smuggled_admin_headers_is_still_refused_by_rbac(
    forwarder: ApiserverForwarder,
) -> None:
    smuggled = [
        *JSON_HEADERS,
        ("Authorization", "Bearer cluster-admin-token"),
        ("Impersonate-User", "system:admin"),
        ("Impersonate-Group", "system:masters"),
    ]

    response = await forwarder.forward(
        ForwardRequest(
            method="POST", path=CONFIGMAPS, user="kaas:alice", groups=list(VIEWER_GROUPS),
            headers=smuggled, body=json_body(configmap("smuggled")),
        )
    )

    assert response.status == 403
    status = await read_json(response)
    assert status["kind"] == "Status"
    assert "kaas:alice" in status["message"]


async def test_client_authorization_never_replaces_the_agent_credentials(
    forwarder: ApiserverForwarder,
) -> None:
    # The agent's service account may impersonate only the kaas groups; an admin token could impersonate
    # system:masters. A 403 proves the apiserver saw the agent's credentials, not the client's.
    response = await whoami(
        forwarder, user="kaas:mallory", groups=["system:masters"],
        headers=[*JSON_HEADERS, ("Authorization", "Bearer cluster-admin-token")],
    )

    assert response.status == 403
    assert "impersonate" in (await read_json(response))["message"]


async def test_viewer_create_is_forbidden_by_the_cluster_rbac(forwarder: ApiserverForwarder) -> None:
    response = await forwarder.forward(
        ForwardRequest(
            method="POST", path=CONFIGMAPS, user="kaas:vera", groups=list(VIEWER_GROUPS),
            headers=JSON_HEADERS, body=json_body(configmap("from-viewer")),
        )
    )

    assert response.status == 403
    assert (await read_json(response))["reason"] == "Forbidden"


async def test_member_create_succeeds(forwarder: ApiserverForwarder, kube: KubeStandinHandle) -> None:
    response = await forwarder.forward(
        ForwardRequest(
            method="POST", path=CONFIGMAPS, user="kaas:mia", groups=list(MEMBER_GROUPS),
            headers=JSON_HEADERS, body=json_body(configmap("from-member")),
        )
    )

    assert response.status == 201
    assert (await read_json(response))["data"] == {"k": "v"}
    listed = await forwarder.forward(
        ForwardRequest(method="GET", path=f"{CONFIGMAPS}/from-member", user="kaas:vera",
                       groups=list(VIEWER_GROUPS))
    )
    assert listed.status == 200
    assert (await read_json(listed))["metadata"]["name"] == "from-member"


async def test_request_without_a_user_is_refused(forwarder: ApiserverForwarder) -> None:
    response = await forwarder.forward(ForwardRequest(method="GET", path="/api/v1/namespaces", user=""))

    assert response.status == 403
    status = await read_json(response)
    assert status["kind"] == "Status"
    assert "no kaas user" in status["message"]


@pytest.mark.parametrize("user", ["system:admin", "system:kube-controller-manager", "alice", "kaas:"])
async def test_only_kaas_user_names_are_impersonated(forwarder: ApiserverForwarder, user: str) -> None:
    response = await whoami(forwarder, user=user, groups=list(MEMBER_GROUPS), headers=JSON_HEADERS)

    assert response.status == 403
    assert "only impersonates kaas users" in (await read_json(response))["message"]


# --- streaming ------------------------------------------------------------------------------------------


async def test_watch_streams_events_before_the_stream_ends(
    forwarder: ApiserverForwarder, kube: KubeStandinHandle
) -> None:
    started = time.monotonic()
    async with asyncio.timeout(10):
        response = await forwarder.forward(
            ForwardRequest(method="GET", path=f"{CONFIGMAPS}?watch=true&timeoutSeconds=60",
                           user="kaas:vera", groups=list(VIEWER_GROUPS))
        )
        async with response:
            assert response.status == 200
            kube.standin.apply([configmap("watched")])

            buffered = b""
            async for chunk in response.body:
                buffered += chunk
                if b"\n" in buffered:
                    break
    event = json.loads(buffered.split(b"\n", 1)[0])

    assert event["type"] == "ADDED"
    assert event["object"]["metadata"]["name"] == "watched"
    # The server keeps the watch open for 60 s: the event arrived long before the stream ended.
    assert time.monotonic() - started < 10


async def test_closing_a_watch_early_releases_the_connection(agent_connection: ApiserverConnection) -> None:
    async with ApiserverForwarder(agent_connection, max_connections=1, pool_timeout_seconds=2) as forwarder:
        for _ in range(3):
            response = await forwarder.forward(
                ForwardRequest(method="GET", path=f"{CONFIGMAPS}?watch=1&timeoutSeconds=60",
                               user="kaas:vera", groups=list(VIEWER_GROUPS))
            )
            assert response.status == 200
            await response.aclose()  # without this the single pooled connection stays taken: 504


# --- what is never forwarded ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "http://evil/",
        "https://evil.example/api/v1/secrets",
        "//host/x",
        "/../x",
        "/api/v1/../../x",
        "/api/%2e%2e/x",
        "/api/v1/namespaces/..%2f..%2fx",
        "/%2F%2Fevil/x",
        "api/v1/pods",
        "",
        "/api/v1/pods\\..\\x",
        "/api/v1/pods x",
        "/api/v1/pods\r\nHost: evil",
    ],
)
async def test_targets_that_are_not_apiserver_paths_are_refused(
    forwarder: ApiserverForwarder, target: str
) -> None:
    response = await forwarder.forward(
        ForwardRequest(method="GET", path=target, user="kaas:alice", groups=list(MEMBER_GROUPS))
    )

    assert response.status == 400
    status = await read_json(response)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "BadRequest", 400)
    with pytest.raises(InvalidForwardRequest):
        validate_target(target)


def test_ordinary_paths_with_queries_are_accepted() -> None:
    target = "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&fieldSelector=a%3D..%2Fb&watch=1"
    assert validate_target(target) == target
    assert validate_target("/version") == "/version"


async def test_connect_method_is_not_forwarded(forwarder: ApiserverForwarder) -> None:
    response = await forwarder.forward(
        ForwardRequest(method="CONNECT", path="/api/v1/namespaces", user="kaas:alice", groups=["kaas:owner"])
    )

    assert response.status == 405


def test_upstream_headers_replace_every_identity_and_hop_by_hop_header() -> None:
    headers = upstream_headers(
        [
            ("Authorization", "Bearer stolen"),
            ("authorization", "Basic x"),
            ("IMPERSONATE-USER", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("X-Custom-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic y"),
            ("TE", "trailers"),
            ("Trailer", "X"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Host", "evil"),
            ("Content-Length", "12"),
            ("Accept", "application/json"),
            ("Accept", "application/yaml"),
        ],
        user="kaas:alice",
        groups=["kaas:authenticated", "kaas:viewer"],
    )

    assert headers == [
        ("Accept", "application/json"),
        ("Accept", "application/yaml"),
        ("Accept-Encoding", "identity"),
        ("Impersonate-User", "kaas:alice"),
        ("Impersonate-Group", "kaas:authenticated"),
        ("Impersonate-Group", "kaas:viewer"),
    ]


# --- apiserver trouble ----------------------------------------------------------------------------------


async def test_apiserver_down_answers_502_status() -> None:
    connection = ApiserverConnection(
        base_url=f"http://127.0.0.1:{free_port()}", ssl_context=None, token_source=StaticToken("t")
    )
    async with ApiserverForwarder(connection, connect_timeout_seconds=2) as forwarder:
        response = await forwarder.forward(
            ForwardRequest(method="GET", path="/api/v1/pods", user="kaas:alice", groups=["kaas:owner"])
        )

    assert response.status == 502
    status = await read_json(response)
    assert (status["kind"], status["status"], status["code"]) == ("Status", "Failure", 502)
    assert "unreachable" in status["message"]


async def test_apiserver_that_never_answers_gives_504_status() -> None:
    with silent_listener() as port:
        connection = ApiserverConnection(
            base_url=f"http://127.0.0.1:{port}", ssl_context=None, token_source=StaticToken("t")
        )
        async with ApiserverForwarder(connection, read_timeout_seconds=0.3) as forwarder:
            response = await forwarder.forward(
                ForwardRequest(method="GET", path="/api/v1/pods", user="kaas:alice", groups=["kaas:owner"])
            )

    assert response.status == 504
    status = await read_json(response)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Timeout", 504)


async def test_forwarders_of_an_http_apiserver_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each would load the CA bundle (~50 ms of CPU): many agents in one process stalled their loop."""
    built: list[object] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    connection = ApiserverConnection(base_url="http://127.0.0.1:1", ssl_context=None, token_source=None)
    forwarders = [ApiserverForwarder(connection) for _ in range(20)]
    for forwarder in forwarders:
        await forwarder.aclose()
    assert len(built) <= 1


# --- a closed keep-alive connection (an apiserver stopping in a rolling upgrade) -------------------------


class KeepAliveDropper:
    """A tiny HTTP/1.1 server: each of its first ``dropping`` connections answers one request with
    keep-alive, then closes without answering when the next request arrives on it (as an apiserver that
    stops closes its idle connections just as a client reuses them); every later connection answers each
    request."""

    def __init__(self, *, dropping: int = 1, shutting_down: int = 0) -> None:
        """``shutting_down``: the first that many requests are answered 503 with ``Retry-After: 0``, as an
        apiserver shutting down answers on a connection it has not closed yet."""
        self.requests: list[tuple[int, str]] = []  # (connection number, method) of each request received
        self._dropping = dropping
        self._shutting_down = shutting_down
        self._connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        number = self._connections
        answered = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                method = head.split(b" ", 1)[0].decode()
                lower = head.lower()
                if b"transfer-encoding: chunked" in lower:
                    await reader.readuntil(b"0\r\n\r\n")
                elif b"content-length:" in lower:
                    length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                    await reader.readexactly(length)
                self.requests.append((number, method))
                if number <= self._dropping and answered:
                    return  # closes without an answer
                answered += 1
                body = b'{"kind":"Status","status":"Success"}'
                status = b"200 OK"
                if len(self.requests) <= self._shutting_down:
                    body = b'{"kind":"Status","status":"Failure","message":"apiserver is shutting down"}'
                    status = b"503 Service Unavailable\r\nRetry-After: 0"
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.mark.parametrize(("method", "with_body", "sent_again"), [
    ("GET", False, True),
    ("DELETE", False, True),
    ("PUT", True, False),  # idempotent, but its body stream was consumed
    ("POST", True, False),
    ("POST", False, False),  # not idempotent: the server may have acted on it
])
async def test_a_request_on_a_keep_alive_connection_the_server_closed_is_sent_again_only_when_safe(
    method: str, with_body: bool, sent_again: bool
) -> None:
    dropper = KeepAliveDropper()
    server = await asyncio.start_server(dropper.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = ApiserverConnection(base_url=f"http://127.0.0.1:{port}", ssl_context=None,
                                     token_source=StaticToken("t"))

    def request() -> ForwardRequest:
        return ForwardRequest(method=method, path=CONFIGMAPS, user="kaas:alice", groups=["kaas:owner"],
                              headers=JSON_HEADERS, body=json_body(configmap("x")) if with_body else None)

    try:
        async with ApiserverForwarder(connection) as forwarder:
            first = await forwarder.forward(request())
            assert (first.status, await first.read()) == (200, b'{"kind":"Status","status":"Success"}')
            second = await forwarder.forward(request())
            await second.read()
    finally:
        server.close()
        await server.wait_closed()

    if sent_again:
        assert second.status == 200
        assert dropper.requests == [(1, method), (1, method), (2, method)]
    else:
        assert second.status == 502
        assert dropper.requests == [(1, method), (1, method)]


async def test_the_agents_own_reads_are_sent_again_on_a_closed_keep_alive_connection() -> None:
    dropper = KeepAliveDropper()
    server = await asyncio.start_server(dropper.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = ApiserverConnection(base_url=f"http://127.0.0.1:{port}", ssl_context=None,
                                     token_source=StaticToken("t"))
    try:
        async with ApiserverForwarder(connection) as forwarder:
            answers = [await forwarder.get_json("/api/v1/nodes") for _ in range(2)]
    finally:
        server.close()
        await server.wait_closed()
    assert answers == [{"kind": "Status", "status": "Success"}] * 2
    assert [number for number, _ in dropper.requests] == [1, 1, 2]


async def test_a_read_is_sent_again_past_every_pooled_connection_that_closed() -> None:
    """Three idle pooled connections, all closed by the server at once: the read goes on each in turn, then
    on a new one, and is answered."""
    dropper = KeepAliveDropper(dropping=3)
    server = await asyncio.start_server(dropper.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = ApiserverConnection(base_url=f"http://127.0.0.1:{port}", ssl_context=None,
                                     token_source=StaticToken("t"))
    try:
        async with ApiserverForwarder(connection) as forwarder:
            # three at once: three connections
            await asyncio.gather(*(forwarder.get_json("/api/v1/nodes") for _ in range(3)))
            answer = await forwarder.get_json("/api/v1/nodes")
    finally:
        server.close()
        await server.wait_closed()
    assert answer == {"kind": "Status", "status": "Success"}
    assert sorted(number for number, _ in dropper.requests[3:]) == [1, 2, 3, 4]


@pytest.mark.parametrize(("method", "with_body", "sent_again"), [
    ("GET", False, True),
    ("POST", True, False),
])
async def test_a_request_an_apiserver_shutting_down_refused_is_sent_again_only_when_safe(
    method: str, with_body: bool, sent_again: bool
) -> None:
    dropper = KeepAliveDropper(dropping=0, shutting_down=1)
    server = await asyncio.start_server(dropper.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = ApiserverConnection(base_url=f"http://127.0.0.1:{port}", ssl_context=None,
                                     token_source=StaticToken("t"))
    try:
        async with ApiserverForwarder(connection) as forwarder:
            response = await forwarder.forward(ForwardRequest(
                method=method, path=CONFIGMAPS, user="kaas:alice", groups=["kaas:owner"],
                headers=JSON_HEADERS, body=json_body(configmap("x")) if with_body else None))
            await response.read()
    finally:
        server.close()
        await server.wait_closed()
    assert response.status == (200 if sent_again else 503)
    assert len(dropper.requests) == (2 if sent_again else 1)


# --- one client for every user ---------------------------------------------------------------------------


class CookieSetter:
    """A tiny HTTP/1.1 server that sets a cookie on every answer and records each request's Cookie header,
    as an aggregated API or a proxied Service might."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                cookie = None
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "cookie":
                        cookie = value.strip()
                self.cookies.append(cookie)
                body = b"{}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Set-Cookie: session=alice-secret; Path=/\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_a_cookie_an_answer_to_one_user_set_never_goes_out_with_another_users_request() -> None:
    upstream = CookieSetter()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = ApiserverConnection(
        base_url=f"http://127.0.0.1:{port}", ssl_context=None, token_source=StaticToken("t")
    )
    try:
        async with ApiserverForwarder(connection) as forwarder:
            for user in ("kaas:alice", "kaas:mallory"):
                response = await forwarder.forward(
                    ForwardRequest(method="GET", path="/api/v1/namespaces", user=user, groups=["kaas:owner"])
                )
                assert response.status == 200
                await response.read()
    finally:
        server.close()
        await server.wait_closed()
    assert upstream.cookies == [None, None]


class HeldStreams:
    """A tiny HTTP/1.1 server that answers each request's head at once and holds its body open until told,
    as an apiserver holds a watch; counts the requests that reached it."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.arrived += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            await self.release.wait()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_two_hundred_watches_are_held_open_at_once() -> None:
    upstream = HeldStreams()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = ApiserverConnection(
        base_url=f"http://127.0.0.1:{port}", ssl_context=None, token_source=StaticToken("t")
    )
    try:
        async with ApiserverForwarder(connection, pool_timeout_seconds=2) as forwarder:
            watches: list[ForwardResponse] = []
            for n in range(200):
                watch = await forwarder.forward(
                    ForwardRequest(
                        method="GET",
                        path=f"{CONFIGMAPS}?watch=1&n={n}",
                        user="kaas:alice",
                        groups=["kaas:owner"],
                    )
                )
                watches.append(watch)
                if watch.status != 200:
                    break
            assert [w.status for w in watches] == [200] * 200
            assert upstream.arrived == 200
            upstream.release.set()
            for watch in watches:
                await watch.read()
    finally:
        upstream.release.set()
        server.close()
        await server.wait_closed()
