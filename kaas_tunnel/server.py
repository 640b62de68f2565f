"""kaas's tunnel server: accepts every cluster agent's WebSocket and proxies kubectl requests over it.

Owned by ``kaas_tunnel``. Started by ``kaas tunnel`` (``run_tunnel_server``), by the embedded mode and
by tests (``TunnelServer``). Up to three listeners in one event loop:

- the agents' WebSocket endpoint (``websockets``), at ``settings.tunnel_path``. The agent authenticates
  BEFORE the upgrade, in ``process_request``: ``Authorization: Bearer <agent token>``, whose SHA-256 must be
  a live cluster's ``agent_token_hash`` (anything else, user API tokens included, is 401). One live session
  per cluster: a newer one replaces an older one here at once (GOAWAY with the reason) and, through the
  registry claim, on any other process too (its next refresh fails and it closes its session).
  A replacement is also admitted, counted and logged before the upgrade, in the token check's transaction
  (``store.authenticate_and_admit``: cluster id, old and new session ids, the remote address, never the
  token); beyond
  ``agent_replacements_per_window`` per cluster the newer dial answers 429 and the live session stays.
  The counts are on ``cluster_agents``, where the reconciler's agent gate puts them on AgentConnected.
- kubectl's k8s proxy (``kaas_tunnel.k8s_proxy``) when ``KAAS_K8S_PROXY_PORT`` is set: the one-hop path,
  straight onto an agent session of this process, or one hop to the process that holds it;
- the INTERNAL HTTP endpoint the API's k8s proxy (and the other processes' k8s proxies) call
  (``kaas_tunnel.proxy``), which also serves this server's metrics (``kaas_tunnel.metrics``) at
  ``/metrics`` to the metrics token alone; its input is bounded like the API's (``kaas_core.serving``:
  request-head limits, slow clients cut off, bodies up to the k8s proxy's cap).

Agents report their status on agent-opened streams (metadata ``{"kind": "status"}``, body the report's
JSON); the server writes ``cluster_agents`` (``kaas_tunnel.store``), the only writer of that table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import json
import logging
import socket
import uuid
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agents.tunnel import TunnelSession
from agents.tunnel.connection import (
    WEBSOCKET_MAX_MESSAGE,
    DialHandler,
    StreamClosedError,
    TunnelConnection,
    TunnelStream,
    websockets_logger,
)
from agents.tunnel.http import STATUS_KIND
from agents.tunnel.kube_status import kube_status
from agents.tunnel.loop_lag import LoopLagProbe
from agents.tunnel.protocol import DEFAULT_MAX_BUFFERED_PER_STREAM
from agents.tunnel.status_report import ClusterStatusReport
from kaas_core.credential_cache import (
    CredentialCache,
    InProcessRevocationFeed,
    LastUsedRecorder,
    RevocationFeed,
    install_revocation_hooks,
)
from kaas_core.db.models import AuditEvent
from kaas_core.internal_hop import INTERNAL_HOP_LIMITS, assertion_key
from kaas_core.serving.body_limit import BodyLimitMiddleware, BodyRule, Refusal
from kaas_core.serving.limits import server_config
from kaas_core.tunnel_registry import TunnelRegistry
from kaas_tunnel import store
from kaas_tunnel.admission import HandshakeGate, HandshakeTicket
from kaas_tunnel.config import TunnelSettings
from kaas_tunnel.group_commit import GroupCommit
from kaas_tunnel.k8s_proxy import k8s_proxy_app
from kaas_tunnel.metrics import TunnelMetrics
from kaas_tunnel.proxy import internal_app

logger = logging.getLogger(__name__)

MAX_STATUS_REPORT_BYTES = 1024 * 1024
REFRESH_BATCH = 500  # claims refreshed per Redis round trip


@dataclass(eq=False)
class AgentSession:
    """One live agent session of this process."""

    cluster_id: str
    session_id: str
    connection: TunnelConnection
    claimed: bool = False  # in the registry: refreshed by the server's one refresher


def _unauthorized(message: str) -> Response:
    body = (message + "\n").encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("WWW-Authenticate", 'Bearer realm="kaas-tunnel"'),
        ]
    )
    return Response(http.HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, body)


def _too_many_replacements(message: str, *, retry_after_seconds: int) -> Response:
    body = (message + "\n").encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Retry-After", str(retry_after_seconds)),
        ]
    )
    return Response(http.HTTPStatus.TOO_MANY_REQUESTS.value, "Too Many Requests", headers, body)


def _busy(*, retry_after_seconds: int) -> Response:
    body = (
        "the tunnel server is busy with other agents' handshakes:"
        f" retry after about {retry_after_seconds} s\n"
    ).encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Retry-After", str(retry_after_seconds)),
        ]
    )
    return Response(http.HTTPStatus.SERVICE_UNAVAILABLE.value, "Service Unavailable", headers, body)


def _address(remote: Any) -> str:
    """``host:port`` of a peer address tuple (IPv4 or IPv6), for log lines."""
    if isinstance(remote, tuple) and len(remote) >= 2:
        host = str(remote[0])
        return f"[{host}]:{remote[1]}" if ":" in host else f"{host}:{remote[1]}"
    return str(remote)


def _body_limited(app: Any, *, max_bytes: int) -> BodyLimitMiddleware:
    """The internal endpoint takes bodies up to the k8s proxy's cap, refused as a Kubernetes ``Status``."""

    def as_status(refusal: Refusal) -> dict[str, Any]:
        return kube_status(refusal.status, refusal.message, reason="RequestEntityTooLarge")

    return BodyLimitMiddleware(app, rules=[BodyRule(prefix="", max_bytes=max_bytes, render=as_status)])


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class TunnelServer:
    """The agents' WebSocket endpoint, the internal proxy endpoint and (when its port is set) kubectl's k8s
    proxy; ``start()`` then ``stop()``.

    ``session_factory`` reaches the API's database (tokens, ``cluster_agents``); ``registry`` is shared with
    every other tunnel server and API process (Redis) or in-memory in the embedded mode. ``metrics`` gets a
    registry of its own unless given.
    """

    def __init__(
        self,
        settings: TunnelSettings,
        *,
        session_factory: sessionmaker[Session],
        registry: TunnelRegistry,
        metrics: TunnelMetrics | None = None,
        revocation_feed: RevocationFeed | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else TunnelMetrics()
        self._factory = session_factory
        self.registry = registry
        # verifies the API's signed assertions on the internal endpoint (kaas_core.internal_hop)
        self.assertion_key = assertion_key(settings.tunnel_internal_secret.get_secret_value())
        self._sessions: dict[str, AgentSession] = {}
        # set by stop(): the sessions it closes keep their registry claims, so that the API's k8s proxy,
        # finding this process gone, waits for each agent's new session elsewhere instead of answering
        # "not connected" (a claim is replaced by the new session's, or runs out with its TTL)
        self._stopping = False
        # Handshakes that passed process_request (cluster id, session id, admission ticket); weak, so a
        # handshake that fails later leaks nothing (its ticket runs out by its deadline).
        self._authenticated: weakref.WeakKeyDictionary[ServerConnection, tuple[str, str, HandshakeTicket]] = (
            weakref.WeakKeyDictionary()
        )
        self._ws_server: Server | None = None
        self._http_server: uvicorn.Server | None = None
        self._http_socket: socket.socket | None = None
        self._tunnel_port = 0
        self._internal_port = 0
        self.loop_lag = LoopLagProbe(name="tunnel server loop", on_sample=self.metrics.loop_lag.observe)
        self._refresher: asyncio.Task[None] | None = None
        # every handshake's token check and admission, and every cluster_agents change, in group commits:
        # a herd of reconnecting agents costs a transaction per batch, not three per agent
        self._admissions: GroupCommit[str, tuple[str | None, store.Admission | None]] = GroupCommit(
            functools.partial(
                store.authenticate_and_admit_many,
                session_factory,
                limit=settings.agent_replacements_per_window,
                window=timedelta(seconds=settings.agent_replacement_window_seconds),
            ),
            name="agent-admissions",
        )
        self._agent_rows: GroupCommit[store.AgentRowChange, None] = GroupCommit(
            functools.partial(store.apply_changes, session_factory), name="cluster-agents"
        )
        # the k8s proxy listener's (kaas_tunnel.k8s_proxy): who may reach which cluster, remembered a few
        # seconds and forgotten at once on a revocation (kaas_core.credential_cache)
        self.revocation_feed = revocation_feed if revocation_feed is not None else InProcessRevocationFeed()
        install_revocation_hooks(session_factory, self.revocation_feed)
        self.last_used = LastUsedRecorder(session_factory)
        self.credentials = CredentialCache(
            session_factory,
            feed=self.revocation_feed,
            ttl_seconds=settings.credential_cache_seconds,
            recorder=self.last_used,
        )
        self._last_used_task: asyncio.Task[None] | None = None
        self._proxy_server: uvicorn.Server | None = None
        self._proxy_socket: socket.socket | None = None
        self._proxy_port = 0
        self._peers: httpx.AsyncClient | None = None
        self.handshakes = HandshakeGate(
            max_in_progress=settings.max_handshakes_in_progress,
            lag_limit=settings.handshake_lag_limit_seconds,
            ticket_deadline=2 * settings.handshake_timeout_seconds,
            loop_lag=lambda: self.loop_lag.latest,
        )

    # --- lifecycle ---

    async def start(self) -> None:
        """Listen on both ports (port 0 picks a free one; see ``tunnel_url`` / ``internal_url``)."""
        settings = self.settings
        self.loop_lag.start()
        self._refresher = asyncio.create_task(self._refresh_claims(), name="tunnel-claim-refresher")
        self._ws_server = await serve(
            self._handle_agent,
            settings.tunnel_host,
            settings.tunnel_port,
            process_request=self._process_request,
            compression=None,
            max_size=WEBSOCKET_MAX_MESSAGE,
            ping_interval=None,  # the tunnel protocol pings by itself
            open_timeout=settings.handshake_timeout_seconds,
            close_timeout=5,
            server_header=None,
            logger=websockets_logger("kaas_tunnel.websockets"),
        )
        self._tunnel_port = self._ws_server.sockets[0].getsockname()[1]
        self._http_socket = _bound_socket(settings.internal_host, settings.internal_port)
        self._internal_port = self._http_socket.getsockname()[1]
        self._http_server = await self._serve_http(internal_app(self), self._http_socket)
        logger.info(
            "tunnel server: agents at %s, internal endpoint at %s", self.tunnel_url, self.internal_url
        )
        if settings.k8s_proxy_port is not None:
            await self._start_k8s_proxy()

    async def _start_k8s_proxy(self) -> None:
        """kubectl's listener (``kaas_tunnel.k8s_proxy``): bounded like every kaas server, bodies up to the
        k8s proxy's cap; its revocation feed and ``last_used_at`` batches start with it."""
        settings = self.settings
        assert settings.k8s_proxy_port is not None
        await self.revocation_feed.ensure_listening()
        self._last_used_task = asyncio.create_task(self.last_used.run(), name="tunnel-last-used")
        self._proxy_socket = _bound_socket(settings.k8s_proxy_host, settings.k8s_proxy_port)
        self._proxy_port = self._proxy_socket.getsockname()[1]
        self._proxy_server = await self._serve_http(k8s_proxy_app(self), self._proxy_socket)
        logger.info("tunnel server: k8s proxy at %s", self.k8s_proxy_url)

    async def _serve_http(self, app: Any, sock: socket.socket) -> uvicorn.Server:
        """One of this process's HTTP listeners on ``sock``: bounded like every kaas server, bodies up to the
        k8s proxy's cap."""
        config = server_config(
            _body_limited(app, max_bytes=self.settings.k8s_proxy_max_body_bytes),
            limits=self.settings.http_limits,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        config.load()
        server = uvicorn.Server(config)
        # startup()/shutdown() rather than serve(): serve() would take over the process's signal handlers,
        # and several servers (and agents) may share this event loop.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        return server

    async def stop(self) -> None:
        """Stop taking proxied requests and let those in flight finish (the internal listener's graceful
        shutdown), then close every agent session (GOAWAY) keeping their claims, then the agents' listener.
        Idempotent."""
        self._stopping = True
        if self._proxy_server is not None:
            self._proxy_server.should_exit = True
            await self._proxy_server.shutdown(sockets=[self._proxy_socket] if self._proxy_socket else None)
            self._proxy_server = None
        if self._proxy_socket is not None:
            self._proxy_socket.close()
            self._proxy_socket = None
        if self._http_server is not None:
            self._http_server.should_exit = True
            await self._http_server.shutdown(sockets=[self._http_socket] if self._http_socket else None)
            self._http_server = None
        for live in list(self._sessions.values()):
            live.connection.close("the kaas tunnel server is shutting down")
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        if self._http_socket is not None:
            self._http_socket.close()
            self._http_socket = None
        await self.loop_lag.stop()
        refresher, self._refresher = self._refresher, None
        last_used, self._last_used_task = self._last_used_task, None
        for task in (refresher, last_used):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.revocation_feed.aclose()
        peers, self._peers = self._peers, None
        if peers is not None:
            await peers.aclose()

    async def __aenter__(self) -> TunnelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def tunnel_url(self) -> str:
        """Where agents connect (``ws://host:port/path``)."""
        return f"ws://{self.settings.tunnel_host}:{self._tunnel_port}{self.settings.tunnel_path}"

    @property
    def internal_url(self) -> str:
        """This process's internal endpoint, as recorded in the registry."""
        return self.settings.internal_advertise_url or (
            f"http://{self.settings.internal_host}:{self._internal_port}"
        )

    @property
    def k8s_proxy_url(self) -> str:
        """Where kubectl reaches this process's k8s proxy (``http://host:port``: the ingress has TLS)."""
        return f"http://{self.settings.k8s_proxy_host}:{self._proxy_port}"

    def peer_client(self) -> httpx.AsyncClient:
        """The HTTP client to the other tunnel processes' internal endpoints: one per server, kept alive, so
        a request for an agent held elsewhere costs no new connection (and never a TLS handshake)."""
        if self._peers is None:
            self._peers = httpx.AsyncClient(
                trust_env=False,
                timeout=httpx.Timeout(
                    connect=self.settings.dial_timeout_seconds,
                    read=self.settings.k8s_proxy_read_timeout_seconds,
                    write=self.settings.k8s_proxy_read_timeout_seconds,
                    pool=self.settings.dial_timeout_seconds,
                ),
                limits=INTERNAL_HOP_LIMITS,
            )
        return self._peers

    @property
    def session_factory(self) -> sessionmaker[Session]:
        """The database of tokens and ``cluster_agents`` (the k8s proxy reads where an agent went)."""
        return self._factory

    def write_audit(self, event: AuditEvent) -> None:
        """One ``audit_events`` row, its own transaction (synchronous: the k8s proxy runs it in a thread)."""
        with self._factory() as session:
            session.add(event)
            session.commit()

    def session_for(self, cluster_id: str) -> AgentSession | None:
        """This process's live session of the cluster, if it holds one."""
        live = self._sessions.get(cluster_id)
        if live is None or live.connection.closed.is_set() or live.connection.session.closed:
            return None
        return live

    # --- the agents' side ---

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != self.settings.tunnel_path:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("an agent token is required (Authorization: Bearer <agent token>)")
        ticket = self.handshakes.try_enter()
        if ticket is None:
            self.metrics.dials_refused_busy.inc()
            return _busy(retry_after_seconds=self.handshakes.retry_after())
        try:
            refusal = await self._admit(connection, token.strip(), ticket)
        except BaseException:
            ticket.release()
            raise
        if refusal is not None:
            ticket.release()
        return refusal

    async def _admit(
        self, connection: ServerConnection, token: str, ticket: HandshakeTicket
    ) -> Response | None:
        settings = self.settings
        try:
            cluster_id, admission = await self._admissions.submit(token)
        except Exception:
            logger.exception("tunnel server: authenticating and admitting an agent failed on the database")
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "try again later\n")
        if cluster_id is None or admission is None:
            logger.info(
                "tunnel server: refused an agent from %s: invalid agent token", connection.remote_address
            )
            return _unauthorized("invalid agent token")
        session_id = uuid.uuid4().hex
        remote = _address(connection.remote_address)
        if admission.refused:
            logger.warning(
                "tunnel server: refused a newer agent session of cluster %s from %s: %d replacements"
                " within %g s already; live session %s stays (retry after %d s)",
                cluster_id,
                remote,
                settings.agent_replacements_per_window,
                settings.agent_replacement_window_seconds,
                admission.replaces,
                admission.retry_after_seconds,
            )
            return _too_many_replacements(
                "too many agent sessions of this cluster replaced within "
                f"{settings.agent_replacement_window_seconds:g} s: is a second agent running with this"
                f" cluster's token? Retry after {admission.retry_after_seconds} s",
                retry_after_seconds=admission.retry_after_seconds,
            )
        if admission.replaces is not None:
            logger.warning(
                "tunnel server: cluster %s: agent session %s from %s replaces live session %s"
                " (replacement %d of this cluster)",
                cluster_id,
                session_id,
                remote,
                admission.replaces,
                admission.replacements,
            )
        self._authenticated[connection] = (cluster_id, session_id, ticket)
        return None

    async def _handle_agent(self, websocket: ServerConnection) -> None:
        authenticated = self._authenticated.pop(websocket, None)
        if authenticated is None:  # cannot happen: process_request refused it
            await websocket.close(1008, "not authenticated")
            return
        cluster_id, session_id, ticket = authenticated
        try:
            await self._serve_agent(websocket, cluster_id, session_id, ticket)
        finally:
            ticket.release()

    async def _serve_agent(
        self, websocket: ServerConnection, cluster_id: str, session_id: str, ticket: HandshakeTicket
    ) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        session = TunnelSession(
            role="server",
            now=loop.time(),
            info={"cluster_id": cluster_id, "session_id": session_id},
            initial_window=settings.stream_window_bytes,
            max_buffered_per_stream=max(settings.stream_window_bytes, DEFAULT_MAX_BUFFERED_PER_STREAM),
            max_streams=settings.max_streams_per_session,
        )
        # the session's row must exist before its reports are written (they are written only for the
        # session the row names): a report the agent sends at once would otherwise be lost, and an agent
        # sends an unchanged report again only once a minute
        recorded = asyncio.Event()
        connection = TunnelConnection(
            websocket,
            session,
            on_dial=self._status_handler(cluster_id, session_id, recorded=recorded),
            name=f"server-{cluster_id}",
        )
        live = AgentSession(cluster_id=cluster_id, session_id=session_id, connection=connection)
        runner = asyncio.create_task(live.connection.run(), name=f"tunnel-{cluster_id}-{session_id}")
        hello = asyncio.create_task(connection.hello.wait())
        await asyncio.wait(
            {hello, runner}, timeout=settings.handshake_timeout_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        hello.cancel()
        if not connection.hello.is_set():
            connection.close("no HELLO from the agent in time")
            await runner
            return
        if runner.done():
            return
        older = self._sessions.get(cluster_id)
        self._sessions[cluster_id] = live
        self.metrics.sessions.set(len(self._sessions))
        if older is not None:
            older.connection.close("replaced by a newer session of this cluster")
        try:
            await self.registry.claim(cluster_id=cluster_id, session_id=session_id, address=self.internal_url)
            live.claimed = True  # refreshed from now on (_refresh_claims)
            await self._write(
                store.connected(cluster_id=cluster_id, session_id=session_id, address=self.internal_url)
            )
            recorded.set()
            ticket.release(completed=True)
            logger.info("tunnel server: cluster %s agent connected (session %s)", cluster_id, session_id)
            await asyncio.shield(runner)
        finally:
            live.connection.close(live.connection.close_reason or "session ended")
            await asyncio.gather(runner, return_exceptions=True)
            if self._sessions.get(cluster_id) is live:
                del self._sessions[cluster_id]
            self.metrics.sessions.set(len(self._sessions))
            if not self._stopping:
                with contextlib.suppress(Exception):
                    await self.registry.release(cluster_id=cluster_id, session_id=session_id)
            await self._write(store.disconnected(cluster_id=cluster_id, session_id=session_id))
            logger.info(
                "tunnel server: cluster %s agent disconnected: %s", cluster_id, live.connection.close_reason
            )

    async def _refresh_claims(self) -> None:
        """Every third of the registry's TTL, the claims of all this process's sessions, in pipelines of
        ``REFRESH_BATCH``: a round trip per batch, not a task and a round trip per session (5,000 sessions
        cost the loop 500 refreshes a second). A claim found expired (this loop was late) is taken back if
        nobody else took it; a claim another session took closes ours."""
        interval = max(self.registry.ttl_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            claimed = [live for live in list(self._sessions.values()) if live.claimed]
            for start in range(0, len(claimed), REFRESH_BATCH):
                batch = claimed[start : start + REFRESH_BATCH]
                try:
                    ours = await self.registry.refresh_many([(s.cluster_id, s.session_id) for s in batch])
                except Exception:
                    logger.exception("tunnel server: cannot refresh %d claims; trying again", len(batch))
                    continue
                for live, still_ours in zip(batch, ours, strict=True):
                    if not still_ours and self._sessions.get(live.cluster_id) is live:
                        await self._reclaim_or_close(live)

    async def _reclaim_or_close(self, live: AgentSession) -> None:
        reclaimed = False
        with contextlib.suppress(Exception):
            reclaimed = await self.registry.reclaim(
                cluster_id=live.cluster_id, session_id=live.session_id, address=self.internal_url
            )
        if not reclaimed:
            live.connection.close("replaced by a newer session of this cluster on another tunnel server")

    async def _write(self, change: store.AgentRowChange) -> None:
        try:
            await self._agent_rows.submit(change)
        except Exception:
            logger.exception("tunnel server: writing cluster_agents of cluster %s failed", change.cluster_id)

    def _status_handler(self, cluster_id: str, session_id: str, *, recorded: asyncio.Event) -> DialHandler:
        async def handle(
            connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, Any]
        ) -> None:
            if metadata.get("kind") != STATUS_KIND:
                connection.reject(stream, f"the tunnel server accepts no {metadata.get('kind')!r} streams")
                return
            connection.accept(stream)
            received = bytearray()
            while chunk := await stream.read():
                received += chunk
                if len(received) > MAX_STATUS_REPORT_BYTES:
                    stream.reset(f"status report larger than {MAX_STATUS_REPORT_BYTES} bytes")
                    return
            try:
                report = ClusterStatusReport.from_dict(_json_object(bytes(received)))
            except (ValueError, TypeError) as exc:
                stream.reset(f"invalid status report: {exc}")
                return
            await recorded.wait()  # the session ends (and this task with it) if it never is
            await self._write(store.status(cluster_id=cluster_id, session_id=session_id, report=report))
            stream.close_write()

        return handle


def _json_object(payload: bytes) -> dict[str, Any]:
    document = json.loads(payload)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


async def serve_tunnel(
    settings: TunnelSettings,
    *,
    session_factory: sessionmaker[Session],
    registry: TunnelRegistry,
    stop: asyncio.Event,
    metrics: TunnelMetrics | None = None,
    revocation_feed: RevocationFeed | None = None,
) -> None:
    """Run a ``TunnelServer`` until ``stop`` is set (for embedding into an existing event loop)."""
    server = TunnelServer(
        settings,
        session_factory=session_factory,
        registry=registry,
        metrics=metrics,
        revocation_feed=revocation_feed,
    )
    await server.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(StreamClosedError):
            await server.stop()
