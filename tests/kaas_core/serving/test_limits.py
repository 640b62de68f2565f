"""The protocol-level limits of every kaas HTTP server, on a real uvicorn over loopback with raw sockets."""

from __future__ import annotations

import asyncio
import errno
import socket
import time

import pytest
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect as ws_connect

from kaas_core.serving.limits import HttpLimits, reuse_port_socket
from tests.kaas_core.serving.conftest import BOUND_SECONDS, RecordingApp, exchange, serving

GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


def post_head(length: int, *extra: bytes) -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" % (length, b"".join(extra))


async def test_a_head_larger_than_the_limit_is_refused_with_431_before_it_is_all_sent() -> None:
    app = RecordingApp()
    oversize = b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (32 * 1024 * 1024) + b"\r\n\r\n"
    async with serving(app, limits=HttpLimits(max_head_bytes=64 * 1024)) as port:
        answer = await exchange(port, [oversize[i : i + 65536] for i in range(0, len(oversize), 65536)])
    assert answer.status == 431
    assert answer.json["message"] == "the request line and headers are larger than 65536 bytes"
    assert 0 <= answer.sent_before_answer < len(oversize)  # answered without waiting for the 32 MB
    assert app.bodies == []


async def test_more_header_fields_than_the_limit_are_refused_with_431() -> None:
    app = RecordingApp()
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(12))  # and Host: 13
    async with serving(app, limits=HttpLimits(max_headers=12)) as port:
        answer = await exchange(port, [b"GET /x HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"])
    assert answer.status == 431
    assert answer.json["error"] == "too_many_headers"
    assert app.bodies == []


async def test_headers_up_to_the_limits_are_served() -> None:
    app = RecordingApp()
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10))
    async with serving(app, limits=HttpLimits(max_headers=12)) as port:
        answer = await exchange(
            port, [b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers + b"\r\n"]
        )
    assert answer.status == 200


async def test_a_head_that_does_not_arrive_in_time_is_answered_408_and_closed() -> None:
    app = RecordingApp()
    async with serving(app, limits=HttpLimits(head_timeout_seconds=0.5)) as port:
        answer = await exchange(port, [b"GET /x HTTP/1.1\r\nHo"])
    assert answer.status == 408
    assert "within 0.5 s" in answer.json["message"]
    assert 0.45 <= answer.answered_after < BOUND_SECONDS
    assert app.bodies == []


async def test_a_head_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline() -> None:
    app = RecordingApp()
    async with serving(app, limits=HttpLimits(head_timeout_seconds=0.5)) as port:
        answer = await exchange(
            port, [bytes([byte]) for byte in b"GET /x HTTP/1.1\r\nHost: t\r\n"], pause=0.1
        )
    assert answer.status == 408
    assert answer.answered_after < 2.0  # the whole head would have taken 2.7 s


async def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline_without_an_answer() -> None:
    async with serving(RecordingApp(), limits=HttpLimits(head_timeout_seconds=0.5)) as port:
        answer = await exchange(port, [])
    assert answer.raw == b""
    assert 0.45 <= answer.answered_after < BOUND_SECONDS


async def test_a_response_that_streams_longer_than_the_head_deadline_is_not_cut() -> None:
    async def slow_stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        for piece in (b"a", b"b", b"c", b"d"):
            await asyncio.sleep(0.3)
            await send({"type": "http.response.body", "body": piece, "more_body": piece != b"d"})

    async with serving(slow_stream, limits=HttpLimits(head_timeout_seconds=0.5)) as port:
        answer = await exchange(port, [b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"])
    assert answer.status == 200
    assert answer.raw.endswith(b"\r\n\r\nabcd")


async def test_a_trickled_body_is_cut_off_with_408_and_the_application_sees_a_disconnect() -> None:
    app = RecordingApp()
    limits = HttpLimits(body_grace_seconds=0.5, body_min_bytes_per_second=100)
    async with serving(app, limits=limits) as port:
        answer = await exchange(port, [post_head(1000)] + [b"x"] * 40, pause=0.2)
    assert answer.status == 408
    assert answer.json["message"] == "the request body arrived slower than 100 bytes/s"
    assert answer.answered_after < 3.0  # the body would have taken 8 s
    assert app.disconnects == 1
    assert app.bodies == []


async def test_a_body_at_the_minimum_rate_is_served() -> None:
    app = RecordingApp()
    limits = HttpLimits(body_grace_seconds=0.3, body_min_bytes_per_second=100)
    async with serving(app, limits=limits) as port:
        answer = await exchange(port, [post_head(200, b"Connection: close\r\n")] + [b"x" * 50] * 4, pause=0.2)
    assert answer.status == 200
    assert app.bodies == [200]


async def test_time_the_application_does_not_read_the_body_is_not_held_against_the_client() -> None:
    # 1 MiB arrives at once, but the application waits 1 s before reading it: uvicorn stops reading after
    # 64 KiB, so at the pace check the client was waiting for us, not the other way round.
    app = RecordingApp(delay_before_reading=1.0)
    limits = HttpLimits(body_grace_seconds=0.3, body_min_bytes_per_second=10 * 1024 * 1024)
    body = b"x" * (1024 * 1024)
    async with serving(app, limits=limits) as port:
        answer = await exchange(port, [post_head(len(body), b"Connection: close\r\n"), body])
    assert answer.status == 200
    assert app.bodies == [len(body)]


async def test_a_client_waiting_for_100_continue_is_not_held_to_the_body_pace() -> None:
    app = RecordingApp(delay_before_reading=1.0)
    limits = HttpLimits(body_grace_seconds=0.3, body_min_bytes_per_second=1000)
    async with serving(app, limits=limits) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(BOUND_SECONDS):
                writer.write(post_head(5, b"Expect: 100-continue\r\nConnection: close\r\n"))
                interim = await reader.readuntil(b"\r\n\r\n")
                assert interim.startswith(b"HTTP/1.1 100 ")
                writer.write(b"hello")
                final = await reader.read()
        finally:
            writer.close()
    assert final.startswith(b"HTTP/1.1 200 ")
    assert app.bodies == [5]


async def test_a_websocket_outlives_the_head_and_body_deadlines() -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})

    limits = HttpLimits(head_timeout_seconds=0.3, body_grace_seconds=0.3, body_min_bytes_per_second=1000)
    async with (
        serving(echo, limits=limits) as port,
        ws_connect(f"ws://127.0.0.1:{port}/ws") as websocket,
    ):
        await asyncio.sleep(1.0)  # idle past both deadlines: what is tested is that nothing cuts it
        await websocket.send("still here")
        assert await asyncio.wait_for(websocket.recv(), BOUND_SECONDS) == "still here"


async def test_requests_on_one_keep_alive_connection_each_get_their_own_head_deadline() -> None:
    app = RecordingApp()
    async with serving(app, limits=HttpLimits(head_timeout_seconds=0.6)) as port:
        # three requests 0.4 s apart: 1.2 s in all, each head in time
        last = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        answer = await exchange(port, [GET, GET, last], pause=0.4)
    assert answer.raw.count(b"HTTP/1.1 200 ") == 3
    assert len(app.bodies) == 3


async def test_an_answer_before_the_body_leaves_the_rest_read_for_a_while_then_closes() -> None:
    async def answers_at_once(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    limits = HttpLimits(linger_seconds=0.5)
    started = time.monotonic()
    async with serving(answers_at_once, limits=limits) as port:
        # 100 MB announced, 64 KiB every 50 ms: fast enough for the body pace, far too long to wait for
        answer = await exchange(port, [post_head(100_000_000)] + [b"x" * 65536] * 200, pause=0.05)
    assert answer.status == 413
    assert answer.sent > 65536  # the rest was read while the client could read the answer...
    assert time.monotonic() - started < 3.0  # ...for a while: the whole body would have taken 10 s


async def test_a_body_that_completes_after_an_early_answer_ends_the_connection_at_once() -> None:
    async def answers_at_once(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    started = time.monotonic()
    async with serving(answers_at_once, limits=HttpLimits(linger_seconds=5)) as port:
        answer = await exchange(port, [post_head(3000), b"x" * 1000, b"x" * 2000], pause=0.1)
    assert answer.status == 413
    assert answer.sent == len(post_head(3000)) + 3000  # all of it was taken...
    assert not answer.reset  # ...so the close is a clean one
    assert time.monotonic() - started < 2.0  # not the linger time


async def test_a_client_writing_its_whole_body_before_reading_gets_the_early_answer_not_a_reset() -> None:
    # as kubectl does: a reset while it still writes is the error it reports, whatever the server answered
    async def answers_at_once(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    body = b"x" * (32 * 1024 * 1024)  # more than the kernel buffers between the two ends take
    async with serving(answers_at_once, limits=HttpLimits(linger_seconds=5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(BOUND_SECONDS):
                writer.write(post_head(len(body)) + body)
                await writer.drain()
                answer = await reader.read()
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_a_client_writing_its_whole_oversize_head_before_reading_gets_the_431_not_a_reset() -> None:
    oversize = b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (32 * 1024 * 1024) + b"\r\n\r\n"
    async with serving(RecordingApp(), limits=HttpLimits(linger_seconds=5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(BOUND_SECONDS):
                writer.write(oversize)
                await writer.drain()
                answer = await reader.readuntil(b"\r\n")
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_servers_started_with_reuse_port_share_one_port_that_others_cannot_take() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = reuse_port_socket("127.0.0.1", port)
    try:
        assert second.getsockname() == ("127.0.0.1", port)
        with socket.socket() as other, pytest.raises(OSError, match="in use") as refused:
            other.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        first.close()
        second.close()
