"""Bounds each HTTP/1.1 connection's request head and body pace at the protocol level, before the application.

Owned by ``kaas_core.serving``. ``server_config`` builds the uvicorn ``Config`` of every kaas HTTP server
with ``LimitedHttpProtocol``: ``kaas api`` and ``kaas up`` (``kaas_cli.commands``, through ``run_server``)
and the tunnel server's internal endpoint (``kaas_tunnel.server``). Body *sizes* are the ASGI
middleware's (``kaas_core.serving.body_limit``), which knows the routes.

Why at the protocol: uvicorn hands the application a request only once its head is complete, so a 32 MB
header, or a head or body trickled a byte at a time, costs memory and a connection before any middleware
or authentication can say no; httptools even joins the pieces of a long header by repeated concatenation.
uvicorn 0.55 has no such limits of its own, and arms no timer at all before a connection's first byte.

The limits (``HttpLimits``, from the ``KAAS_HTTP_*`` settings of ``kaas_core.serving.settings``):

- request line plus headers at most ``max_head_bytes`` (the parser is never fed more), at most
  ``max_headers`` fields: else 431 and the connection closes;
- the whole head within ``head_timeout_seconds`` of the connection's start or the previous response's end:
  else 408 and close (a connection that has sent nothing of a request is closed without an answer);
- a body, once ``body_grace_seconds`` have passed, must have arrived at ``body_min_bytes_per_second`` on
  average (Apache's mod_reqtimeout rule: the deadline moves on with every byte). Time in which the server did
  not read (flow control: the application has not taken the last piece; ``Expect: 100-continue`` before the
  application asked for the body) starts a fresh window, since the client was waiting for us. Else 408 and
  close, or only close when the response has already started;
- an answer given before its request body has arrived (a 413 of ``body_limit``, a 401) leaves the rest of
  the body to be read and dropped for at most ``linger_seconds``; the connection closes when the body is
  in or the time is up (nginx's lingering close). Closing at once, with the client still sending, makes
  the kernel reset the connection, and a client still writing (kubectl) reports the reset, not the answer.

Refusals are JSON in the API's error shape, ``{"error", "message", "detail"}`` (``kaas_api.app``), and
linger the same way (for the whole ``linger_seconds``: what still comes is never parsed).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import sys
from asyncio import TimerHandle, Transport
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from kaas_core.serving.heap import freeze_startup_heap
from kaas_core.serving.websocket import KubeWebSocketProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """What a client may send at the protocol level; see the module docstring for each limit."""

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    head_timeout_seconds: float = 10.0
    body_grace_seconds: float = 10.0
    body_min_bytes_per_second: float = 1024.0
    linger_seconds: float = 2.0


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``limits`` enforced; ``with_limits`` makes the class uvicorn gets."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[LimitedHttpProtocol]:
        """A subclass bound to ``limits``: uvicorn builds one protocol per connection from a class."""
        return cast(type[LimitedHttpProtocol], type(cls.__name__, (cls,), {"limits": limits}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # between two requests, or inside a request's head
        self._head_begun = False  # the parser has seen the first byte of the current request
        self._head_bytes = 0
        self._header_count = 0
        self._body_window_start = 0.0
        self._body_bytes = 0
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._linger_timer: TimerHandle | None = None
        self._finished = False  # refused, or handed over to the WebSocket protocol

    # --- the connection ---

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        if self._awaiting_head:
            room = self.limits.max_head_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # Feed the parser only up to the limit: it would hold, and copy, whatever it is given.
            self._head_bytes += room
            super().data_received(data[:room])
            if self._finished:
                return
            if self._awaiting_head:
                self._refuse(
                    431,
                    "request_head_too_large",
                    f"the request line and headers are larger than {self.limits.max_head_bytes} bytes",
                    {"max_head_bytes": self.limits.max_head_bytes},
                )
                return
            data = data[room:]
        self._body_bytes += len(data)
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        # from here on the WebSocket protocol owns the connection (and its own limits)
        self._finished = True
        self._cancel_timers()
        super().handle_websocket_upgrade()

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count <= self.limits.max_headers:  # the rest are counted, not kept
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._finished:
            return
        if self._header_count > self.limits.max_headers:
            self._refuse(
                431,
                "too_many_headers",
                f"the request has more than {self.limits.max_headers} header fields",
                {"max_headers": self.limits.max_headers},
            )
            return
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        # a WebSocket upgrade cancels this in handle_websocket_upgrade, right after
        self._body_window_start = self.loop.time()
        self._body_bytes = 0
        self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        if not self._finished:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._finished:
            return
        super().on_message_complete()
        self._cancel_body_timer()
        if self._linger_timer is not None:  # the rest of an answered request's body is in: done with it
            self._finished = True
            self._cancel_timers()
            self.transport.close()
            return
        self._awaiting_head = True
        self._head_begun = False
        self._head_bytes = 0
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not (self._finished or self._awaiting_head or self.transport.is_closing()):
            # answered before the body arrived: uvicorn reads and drops the rest, for a while
            self._linger_timer = self.loop.call_later(self.limits.linger_seconds, self._stop_lingering)
        self._arm_head_timer()

    # --- the deadlines ---

    def _arm_head_timer(self) -> None:
        # The head's clock runs only while nothing else is in flight: a watch may stream for hours.
        responding = self.cycle is not None and not self.cycle.response_complete
        if self._finished or not self._awaiting_head or responding or self._head_timer is not None:
            return
        self._head_timer = self.loop.call_later(self.limits.head_timeout_seconds, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._finished or not self._awaiting_head:
            return
        if not self._head_begun:
            self._finished = True
            self.transport.close()  # idle: there is no request to answer
            return
        self._refuse(
            408,
            "request_timeout",
            f"the request head did not arrive within {self.limits.head_timeout_seconds:g} s",
            {"head_timeout_seconds": self.limits.head_timeout_seconds},
        )

    def _arm_body_timer(self) -> None:
        limits = self.limits
        due = (
            self._body_window_start
            + limits.body_grace_seconds
            + self._body_bytes / limits.body_min_bytes_per_second
        )
        self._body_timer = self.loop.call_at(due, self._check_body_pace)

    def _check_body_pace(self) -> None:
        self._body_timer = None
        if self._finished or self._awaiting_head:
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._body_window_start = now  # we kept the client waiting: a fresh window
            self._body_bytes = 0
        elif (
            self._body_window_start
            + self.limits.body_grace_seconds
            + self._body_bytes / self.limits.body_min_bytes_per_second
            <= now
        ):
            rate = self.limits.body_min_bytes_per_second
            self._refuse(
                408,
                "request_timeout",
                f"the request body arrived slower than {rate:g} bytes/s",
                {"body_min_bytes_per_second": rate, "body_grace_seconds": self.limits.body_grace_seconds},
            )
            return
        self._arm_body_timer()

    def _stop_lingering(self) -> None:
        self._linger_timer = None
        if self._finished or self._awaiting_head:
            return
        self._finished = True
        self._cancel_timers()
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_linger_timer(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        self._cancel_linger_timer()

    # --- refusing ---

    def _refuse(self, status: int, error: str, message: str, detail: dict[str, Any]) -> None:
        """Answer ``status`` unless this request (or, while a head arrives, the one before) already has an
        answer going out; then drop whatever still comes for ``linger_seconds`` and close, as after any
        answer given before the request was all in."""
        if self._finished:
            return
        self._finished = True
        self._cancel_timers()
        client = ":".join(str(part) for part in self.client) if self.client else "?"
        log.info("refused a request from %s with %d: %s", client, status, message)
        cycle = self.cycle  # while a head arrives, the previous request's
        if self._awaiting_head:
            answerable = cycle is None or cycle.response_complete
        else:
            answerable = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The application sees a disconnect, and whatever it still sends is dropped: ours is the answer.
            cycle.disconnected = True
            cycle.message_event.set()
        if not answerable:
            self.transport.close()
            return
        self.transport.write(self._refusal_bytes(status, error, message, detail))
        self.flow.resume_reading()  # data_received drops it all from now on
        self._linger_timer = self.loop.call_later(self.limits.linger_seconds, self.transport.close)

    def _refusal_bytes(self, status: int, error: str, message: str, detail: dict[str, Any]) -> bytes:
        body = json.dumps({"error": error, "message": message, "detail": detail}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        return b"".join(content)


def server_config(app: Any, *, limits: HttpLimits, **options: Any) -> uvicorn.Config:
    """The uvicorn ``Config`` of every kaas HTTP server: ``LimitedHttpProtocol`` with ``limits``, WebSockets
    through ``KubeWebSocketProtocol`` (unless ``ws`` says otherwise, e.g. ``"none"``), and logs through
    kaas's own logging (``log_config=None``). ``options`` are uvicorn's (host, port, ssl_*, ws...)."""
    options.setdefault("ws", KubeWebSocketProtocol)
    return uvicorn.Config(app, http=LimitedHttpProtocol.with_limits(limits), log_config=None, **options)


def run_server(config: uvicorn.Config, *, reuse_port: bool = False) -> None:
    """Serve ``config`` in this thread until SIGINT or SIGTERM, as ``uvicorn.run`` does: a server that could
    not start (the port is taken) exits the process with uvicorn's status 3.

    ``reuse_port`` binds with ``SO_REUSEPORT``, so that several processes on one host serve the same port
    and the kernel spreads new connections over them (one per core, as a Service spreads over pods)."""
    server = uvicorn.Server(config)
    sockets = [reuse_port_socket(config.host, config.port)] if reuse_port else None
    freeze_startup_heap()  # the app is built: what exists now lives as long as the process
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT`` (not yet listening: uvicorn listens once its
    start-up is complete); exits with uvicorn's status 3 when the address cannot be bound."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: uvicorn binds those as IPv4 too
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.error("could not bind %s:%d: %s", host, port, exc)
        sys.exit(3)
    return sock
