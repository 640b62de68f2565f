"""Kubernetes' WebSocket subprotocols through a kaas server and kaas's client, as kubectl's port-forward
needs them: ``SPDY/3.1+portforward.k8s.io`` is not an RFC 6455 token, and each hop must carry it as it is."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, NegotiationError

from agents.tunnel.ws_client import connect_kube_websocket, valid_subprotocols
from kaas_core.serving.limits import HttpLimits
from tests.kaas_core.serving.conftest import BOUND_SECONDS, serving

PORT_FORWARD = "SPDY/3.1+portforward.k8s.io"


def answering(choice: str | None) -> tuple[list[list[str]], object]:
    """An ASGI app that records the offered subprotocols and accepts with ``choice`` ("first": the first
    offered one), then echoes; returns (what it saw, the app)."""
    seen: list[list[str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        offered = list(scope.get("subprotocols") or [])
        seen.append(offered)
        picked = offered[0] if choice == "first" and offered else choice
        await send({"type": "websocket.accept", "subprotocol": picked})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})

    return seen, app


async def test_a_port_forward_subprotocol_is_offered_taken_and_answered_as_it_is() -> None:
    seen, app = answering("first")
    async with (
        serving(app, limits=HttpLimits()) as port,  # type: ignore[arg-type]
        connect_kube_websocket(
            f"ws://127.0.0.1:{port}/pf", subprotocols=[PORT_FORWARD, "v5.channel.k8s.io"]
        ) as websocket,
    ):
        assert websocket.subprotocol == PORT_FORWARD
        await websocket.send(b"\x00\x01spdy")
        assert await asyncio.wait_for(websocket.recv(), BOUND_SECONDS) == b"\x00\x01spdy"
    assert seen == [[PORT_FORWARD, "v5.channel.k8s.io"]]


async def test_the_librarys_own_client_still_negotiates_token_subprotocols_with_a_kaas_server() -> None:
    seen, app = answering("first")
    async with (
        serving(app, limits=HttpLimits()) as port,  # type: ignore[arg-type]
        connect(f"ws://127.0.0.1:{port}/exec", subprotocols=["v5.channel.k8s.io"]) as websocket,  # type: ignore[list-item]
    ):
        assert websocket.subprotocol == "v5.channel.k8s.io"
    assert seen == [["v5.channel.k8s.io"]]


async def test_no_offer_means_no_subprotocol() -> None:
    seen, app = answering(None)
    async with (
        serving(app, limits=HttpLimits()) as port,  # type: ignore[arg-type]
        connect_kube_websocket(f"ws://127.0.0.1:{port}/", subprotocols=[]) as websocket,
    ):
        assert websocket.subprotocol is None
    assert seen == [[]]


async def test_a_server_choosing_what_was_not_offered_fails_the_handshake() -> None:
    _, app = answering("v4.channel.k8s.io")
    async with serving(app, limits=HttpLimits()) as port:  # type: ignore[arg-type]
        with pytest.raises(NegotiationError, match=r"v4\.channel\.k8s\.io"):
            async with connect_kube_websocket(f"ws://127.0.0.1:{port}/", subprotocols=[PORT_FORWARD]):
                pass


@pytest.mark.parametrize("bad", ["two words", "", "tab\there", "comma,split", "del\x7f", "ünïcode"])
def test_a_subprotocol_that_could_split_or_bend_the_header_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid WebSocket subprotocol"):
        valid_subprotocols([PORT_FORWARD, bad])


def test_valid_subprotocols_are_kept_in_order() -> None:
    assert valid_subprotocols([PORT_FORWARD, "v5.channel.k8s.io"]) == [PORT_FORWARD, "v5.channel.k8s.io"]


async def test_a_plain_websockets_server_refuses_what_kaas_takes() -> None:
    """Why kaas_core.serving.websocket exists: uvicorn's own sans-I/O protocol answers 400."""
    _, app = answering("first")
    async with serving(app, limits=HttpLimits(), ws="websockets-sansio") as port:  # type: ignore[arg-type]
        with pytest.raises(InvalidStatus) as refused:
            async with connect_kube_websocket(f"ws://127.0.0.1:{port}/", subprotocols=[PORT_FORWARD]):
                pass
    assert refused.value.response.status_code == 400
