"""The agent's runtime: dial kaas over one WebSocket, serve proxied requests, report status, reconnect.

Owned by the agent. ``run_agent`` is the one public entry point: ``agents.main`` (the ``kaas-agent``
console script) calls it with the loaded ``AgentConfig``, and the simulated nodes of the embedded mode call
it many times in one process, so it keeps no global state and installs no signal handlers: it runs until
``stop`` is set. The tunnel itself is driven by ``agents.tunnel.connection``, which kaas's tunnel server
shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from agents.config import AgentConfig
from agents.forward import ApiserverForwarder, ForwardRequest, ForwardResponse, status_response
from agents.kube import apiserver_connection
from agents.status import collect_status
from agents.tunnel import TunnelError, TunnelSession
from agents.tunnel.connection import (
    WEBSOCKET_MAX_MESSAGE,
    DialHandler,
    StreamClosedError,
    TunnelConnection,
    TunnelStream,
    websockets_logger,
)
from agents.tunnel.http import (
    STATUS_KIND,
    HttpHeadError,
    decode_request_metadata,
    encode_response_head,
)
from agents.websocket import serve_websocket

logger = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


async def _serve_http(
    forwarder: ApiserverForwarder,
    connection: TunnelConnection,
    stream: TunnelStream,
    metadata: dict[str, Any],
) -> None:
    """Answer one proxied request: forward it to the apiserver, stream the answer back, always close it."""
    try:
        head = decode_request_metadata(metadata)
    except HttpHeadError as exc:
        connection.reject(stream, f"invalid request: {exc}")
        return
    connection.accept(stream)
    if head.websocket:
        await serve_websocket(forwarder, stream, head)
        return

    async def request_body() -> Any:
        while chunk := await stream.read():
            yield chunk

    response: ForwardResponse = await forwarder.forward(
        ForwardRequest(
            method=head.method,
            path=head.path,
            user=head.user,
            groups=head.groups,
            headers=head.headers,
            body=request_body() if head.body else None,
        )
    )

    async def relay() -> None:
        nonlocal response
        try:
            encoded_head = encode_response_head(response.status, response.headers)
        except HttpHeadError as exc:
            await response.aclose()
            response = status_response(502, "BadGateway", f"the apiserver's answer cannot be relayed: {exc}")
            encoded_head = encode_response_head(response.status, response.headers)
        await stream.write(encoded_head)
        async for chunk in response.body:
            await stream.write(chunk)
        stream.close_write()

    # An idle watch never writes, so it would never notice a reset: wait for either, whichever is first.
    relaying = asyncio.create_task(relay())
    reset = asyncio.create_task(stream.wait_reset())
    try:
        await asyncio.wait({relaying, reset}, return_when=asyncio.FIRST_COMPLETED)
        if relaying.done() and not relaying.cancelled():
            error = relaying.exception()
            if error is not None and not isinstance(error, StreamClosedError):
                stream.reset(f"the apiserver response broke off: {error}")
    finally:
        for task in (relaying, reset):
            task.cancel()
        await asyncio.gather(relaying, reset, return_exceptions=True)
        await response.aclose()


def _dial_handler_for(forwarder: ApiserverForwarder) -> DialHandler:
    async def handle(connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, Any]) -> None:
        await _serve_http(forwarder, connection, stream, metadata)

    return handle


async def _report_status(
    connection: TunnelConnection, forwarder: ApiserverForwarder, *, interval: float, heartbeat: float
) -> None:
    """Every ``interval`` seconds: observe the cluster; send the report on a fresh stream when it changed,
    or when ``heartbeat`` seconds passed since the last one sent.

    Unchanged reports are not sent every time: at rest they were most of the tunnel's traffic and a
    database write each on kaas's side, for nothing. The first report of a session is always sent.
    """
    loop = asyncio.get_running_loop()
    last_sent: str | None = None  # what the last report sent said, its time of collection left out
    sent_at = 0.0
    while not connection.closed.is_set():
        report = await collect_status(forwarder)
        payload = report.to_json()
        observed = dataclasses.replace(report, collected_at="").to_json()
        if observed == last_sent and loop.time() - sent_at < heartbeat:
            await asyncio.sleep(interval)
            continue
        try:
            stream = await connection.open_stream({"kind": STATUS_KIND}, timeout=max(interval, 10.0))
            try:
                await stream.write(payload.encode())
                stream.close_write()
                while await asyncio.wait_for(stream.read(), timeout=max(interval, 10.0)):
                    pass
            finally:
                if not stream.is_reset:
                    stream.reset("status report done")
            last_sent, sent_at = observed, loop.time()
        except (TimeoutError, StreamClosedError, TunnelError) as exc:
            logger.warning("agent: a status report was not delivered: %s", exc)
        await asyncio.sleep(interval)


def backoff_delay(attempt: int, *, minimum: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, minimum * 2**attempt)]."""
    ceiling = min(maximum, minimum * (2 ** min(attempt, 32)))
    return rng.uniform(0, ceiling)


BUSY_STATUSES = frozenset({429, 503})


def retry_after_delay(
    status: int, retry_after: str | None, *, maximum: float, rng: random.Random
) -> float | None:
    """How long to wait when kaas said it is busy (429/503 with ``Retry-After`` in seconds): that long plus
    up to a second (``Retry-After`` counts whole seconds, and the agents given the same second should not
    come back at its first instant); None for any other refusal.

    kaas's tunnel server refuses dials beyond the handshakes it works on at once and gives each refused one,
    in ``Retry-After``, its own turn (``kaas_tunnel.admission``). Waiting that instead of the growing
    exponential backoff brings a whole fleet back as fast as the server can take it.
    """
    if status not in BUSY_STATUSES or retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except ValueError:
        return None  # an HTTP date: kaas never sends one
    if not 0 < seconds < float("inf"):
        return None
    return min(seconds, maximum) + rng.uniform(0.0, 1.0)


async def _session_once(config: AgentConfig, forwarder: ApiserverForwarder, *, stop: asyncio.Event) -> bool:
    """One connection to kaas, served until it ends or ``stop``; True if the handshake completed."""
    loop = asyncio.get_running_loop()
    headers = {"Authorization": f"Bearer {config.agent_token.get_secret_value()}"}
    async with connect(
        config.tunnel_url,
        additional_headers=headers,
        proxy=None,
        compression=None,
        max_size=WEBSOCKET_MAX_MESSAGE,
        open_timeout=10,
        ping_interval=None,  # the tunnel protocol pings by itself
        close_timeout=5,
        logger=websockets_logger("agents.runtime.websockets"),
    ) as websocket:
        session = TunnelSession(
            role="agent",
            now=loop.time(),
            info={
                "cluster_id": config.cluster_id,
                "agent_version": AGENT_VERSION,
                "node_name": config.node_name,
            },
        )
        connection = TunnelConnection(
            websocket, session, on_dial=_dial_handler_for(forwarder), name=f"agent-{config.cluster_id}"
        )
        runner = asyncio.create_task(connection.run(), name=f"agent-{config.cluster_id}-tunnel")
        reporter: asyncio.Task[None] | None = None
        stopper = asyncio.create_task(stop.wait())
        try:
            hello = asyncio.create_task(connection.hello.wait())
            await asyncio.wait({hello, runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            hello.cancel()
            greeted = connection.hello.is_set()
            if greeted and not stop.is_set():
                logger.info("agent: connected to %s as cluster %s", config.tunnel_url, config.cluster_id)
                reporter = asyncio.create_task(
                    _report_status(
                        connection,
                        forwarder,
                        interval=config.report_interval_seconds,
                        heartbeat=config.report_heartbeat_seconds,
                    )
                )
                await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                connection.close("agent shutting down")
            else:
                logger.warning("agent: the tunnel closed: %s", connection.close_reason)
            return greeted
        finally:
            for task in (reporter, stopper):
                if task is not None:
                    task.cancel()
            if not runner.done():
                connection.close(connection.close_reason or "agent shutting down")
            await asyncio.gather(runner, stopper, *([reporter] if reporter else []), return_exceptions=True)


async def run_agent(config: AgentConfig, *, stop: asyncio.Event, rng: random.Random | None = None) -> None:
    """Keep this cluster's agent connected to kaas until ``stop`` is set: reconnect forever, with backoff.

    No global state and no signal handlers: many agents may run in one process.
    """
    jitter = rng or random.Random()  # noqa: S311 - jitter, not security
    async with ApiserverForwarder(apiserver_connection(config.apiserver)) as forwarder:
        attempt = 0
        while not stop.is_set():
            told: float | None = None  # how long kaas asked us to wait
            try:
                if await _session_once(config, forwarder, stop=stop):
                    attempt = 0
            except InvalidStatus as exc:
                status = exc.response.status_code
                told = retry_after_delay(
                    status,
                    exc.response.headers.get("Retry-After"),
                    maximum=config.reconnect_backoff_max_seconds,
                    rng=jitter,
                )
                if told is None:
                    logger.warning("agent: kaas refused the tunnel: HTTP %s", status)
                else:
                    logger.info("agent: kaas is busy (HTTP %s): dialling again in %.1f s", status, told)
            except (TimeoutError, OSError, WebSocketException) as exc:
                logger.warning("agent: cannot reach kaas at %s: %s", config.tunnel_url, exc)
            if stop.is_set():
                return
            if told is not None:
                delay = told  # kaas's word, not a reason to back off further
            else:
                delay = backoff_delay(
                    attempt,
                    minimum=config.reconnect_backoff_min_seconds,
                    maximum=config.reconnect_backoff_max_seconds,
                    rng=jitter,
                )
                attempt += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
