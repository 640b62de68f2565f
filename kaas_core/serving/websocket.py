"""The WebSocket side of every kaas HTTP server: uvicorn's sans-I/O ``websockets`` protocol, taking
Kubernetes' subprotocols as they are.

Owned by ``kaas_core.serving``; ``server_config`` makes it the ``ws`` protocol of ``kaas api``, ``kaas up``
and the tunnel server's internal endpoint. kubectl's port-forward offers ``SPDY/3.1+portforward.k8s.io``,
which is not an RFC 6455 token: the ``websockets`` library answers such a handshake with 400 before the
application sees it. Here the library reads no subprotocol at all: uvicorn still lists the offered ones in
the ASGI scope (split on commas) and writes the one the application accepts into the answer, and the
application (the k8s proxy) checks them (``agents.tunnel.ws_client.valid_subprotocols``) and lets the
cluster's apiserver choose.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers


def _no_subprotocol_from_the_library(headers: Headers) -> None:
    """The application answers the subprotocol (through the ASGI ``websocket.accept``), not the library."""
    return None


class KubeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol whose handshake leaves the subprotocol to the application."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.process_subprotocol = _no_subprotocol_from_the_library  # type: ignore[method-assign]
