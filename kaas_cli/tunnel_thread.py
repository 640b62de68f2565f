"""The tunnel server on its own event loop in a background thread, for ``kaas up`` (one process).

The API runs on uvicorn's loop in the main thread; the tunnel server keeps its agents' WebSockets on
another loop so a busy API never delays keepalives. Both share one ``InMemoryTunnelRegistry``.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from kaas_core.tunnel_registry import TunnelRegistry
from kaas_tunnel.config import TunnelSettings
from kaas_tunnel.metrics import TunnelMetrics
from kaas_tunnel.server import TunnelServer


class BackgroundTunnelServer:
    def __init__(
        self,
        settings: TunnelSettings,
        *,
        session_factory: sessionmaker[Session],
        registry: TunnelRegistry,
        metrics: TunnelMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._session_factory = session_factory
        self._registry = registry
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kaas-tunnel", daemon=True)
        self._server: TunnelServer | None = None

    @property
    def tunnel_url(self) -> str:
        assert self._server is not None, "not started"
        return self._server.tunnel_url

    @property
    def internal_url(self) -> str:
        assert self._server is not None, "not started"
        return self._server.internal_url

    def start(self, *, timeout: float = 30.0) -> None:
        self._thread.start()
        server = TunnelServer(
            self._settings,
            session_factory=self._session_factory,
            registry=self._registry,
            metrics=self._metrics,
        )
        asyncio.run_coroutine_threadsafe(server.start(), self._loop).result(timeout)
        self._server = server

    def stop(self, *, timeout: float = 30.0) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()

    def __enter__(self) -> BackgroundTunnelServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
