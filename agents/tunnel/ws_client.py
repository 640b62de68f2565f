"""Dial a WebSocket with Kubernetes' subprotocols, which are not all RFC 6455 tokens.

Owned by ``agents.tunnel``; used by the k8s proxy (``kaas_api.k8s.proxy``, kaas → tunnel server) and the
agent (``agents.websocket``, agent → apiserver). kubectl's port-forward asks for
``SPDY/3.1+portforward.k8s.io`` (SPDY tunnelled in a WebSocket): the ``/`` is not a token character, and
the ``websockets`` library refuses such a subprotocol both when it is offered (``connect(subprotocols=)``)
and when the server names it in its answer. The apiserver (Go) takes and answers it, so each hop must
carry it unchanged: the offer goes as a plain ``Sec-WebSocket-Protocol`` header and the answer is checked
here, by our own rule (one value, one the client offered), instead of the library's token grammar.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.datastructures import Headers, HeadersLike
from websockets.exceptions import InvalidHeader, NegotiationError

from agents.tunnel.websocket import SUBPROTOCOL_HEADER, parse_subprotocols

# visible ASCII without the list separator: what any value of the header can hold
_SUBPROTOCOL = re.compile(r"[!-+\--~]+")


def valid_subprotocols(offered: Sequence[str]) -> list[str]:
    """``offered`` as sent on: each one visible ASCII without a comma or space (``ValueError`` otherwise,
    so that nothing a client sent can split or extend the header of the next hop)."""
    for subprotocol in offered:
        if not _SUBPROTOCOL.fullmatch(subprotocol):
            raise ValueError(f"invalid WebSocket subprotocol {subprotocol!r}")
    return list(offered)


def chosen_subprotocol(offered: Sequence[str], headers: Headers) -> str | None:
    """The server's choice among ``offered`` (None when it chose none); ``InvalidHeader`` when it named
    several, or ``NegotiationError`` one that was not offered."""
    answered = parse_subprotocols(headers.get_all(SUBPROTOCOL_HEADER))
    if not answered:
        return None
    if len(answered) > 1:
        raise InvalidHeader(SUBPROTOCOL_HEADER, f"multiple values: {', '.join(answered)}")
    if answered[0] not in offered:
        raise NegotiationError(f"unsupported subprotocol: {answered[0]}")
    return answered[0]


def _connection_class(offered: list[str]) -> type[ClientConnection]:
    """A ``ClientConnection`` whose handshake checks the answered subprotocol with ``chosen_subprotocol``."""

    class KubeSubprotocolConnection(ClientConnection):
        def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
            def process_subprotocol(headers: Headers) -> str | None:
                return chosen_subprotocol(offered, headers)

            # the library's handshake calls this to read the answer; the instance's rule replaces its own
            protocol.process_subprotocol = process_subprotocol  # type: ignore[method-assign,assignment]
            super().__init__(protocol, **kwargs)

    return KubeSubprotocolConnection


def connect_kube_websocket(
    url: str, *, subprotocols: Sequence[str], additional_headers: HeadersLike = (), **options: Any
) -> connect:
    """``websockets.asyncio.client.connect`` that offers ``subprotocols`` whatever their characters (after
    ``valid_subprotocols``); the connection's ``subprotocol`` is the server's choice. ``options`` go to
    ``connect`` (never ``subprotocols`` or ``create_connection``)."""
    offered = valid_subprotocols(subprotocols)
    headers = Headers(additional_headers)
    if offered:
        headers[SUBPROTOCOL_HEADER] = ", ".join(offered)
    return connect(url, additional_headers=headers, create_connection=_connection_class(offered), **options)
