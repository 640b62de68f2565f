"""The per-route body caps of ``BodyLimitMiddleware``, on a real uvicorn over loopback."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from kaas_core.serving.body_limit import BodyLimitMiddleware, BodyRule, Refusal, json_values_exceed
from kaas_core.serving.limits import HttpLimits
from tests.kaas_core.serving.conftest import BOUND_SECONDS, RecordingApp, chunked, exchange, serving

CAP = 64 * 1024
BIG_CAP = 4 * CAP


def as_json(refusal: Refusal) -> dict[str, Any]:
    return {"error": refusal.error, "message": refusal.message, "detail": refusal.detail}


def limited(app: Any, *, max_json_values: int | None = None) -> BodyLimitMiddleware:
    return BodyLimitMiddleware(
        app,
        rules=[
            BodyRule(prefix="/big/", max_bytes=BIG_CAP, render=as_json),
            BodyRule(prefix="", max_bytes=CAP, render=as_json, max_json_values=max_json_values),
        ],
    )


def post(path: str, *headers: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path.encode(), b"".join(headers))


async def test_a_content_length_over_the_cap_is_refused_413_before_the_application_runs() -> None:
    app = RecordingApp()
    async with serving(limited(app), limits=HttpLimits()) as port:
        # only the head: the answer comes without the server waiting for any of the 100 MB
        answer = await exchange(port, [post("/x", b"Content-Length: 100000000\r\n")])
    assert answer.status == 413
    assert answer.json == {
        "error": "request_too_large",
        "message": f"the request body is larger than {CAP} bytes, the limit of this route",
        "detail": {"max_body_bytes": CAP},
    }
    assert app.bodies == []


async def test_a_chunked_body_over_the_cap_is_refused_413() -> None:
    app = RecordingApp()
    pieces = chunked(*[b"x" * 16384] * 8)  # twice the cap
    async with serving(limited(app), limits=HttpLimits()) as port:
        answer = await exchange(port, [post("/x", b"Transfer-Encoding: chunked\r\n"), *pieces])
    assert answer.status == 413
    assert answer.json["detail"] == {"max_body_bytes": CAP}
    assert app.bodies == []


class Named(BaseModel):
    name: str


async def test_an_application_answering_its_own_failed_read_is_overruled_by_the_413() -> None:
    api = FastAPI()

    @api.post("/x")
    async def create(body: Named) -> dict[str, str]:  # pragma: no cover (never reached)
        return {"name": body.name}

    pieces = chunked(*[b'{"name": "' + b"x" * 16384] * 8)
    async with serving(limited(api), limits=HttpLimits()) as port:
        head = post("/x", b"Transfer-Encoding: chunked\r\n", b"Content-Type: application/json\r\n")
        answer = await exchange(port, [head, *pieces])
    assert answer.status == 413  # FastAPI itself would have answered 400 for a body it could not read


async def test_a_body_over_the_cap_after_the_response_started_aborts_the_connection() -> None:
    async def answers_first(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with suppress(Exception):  # an application that carries on after its read failed
            while (await receive()).get("more_body", False):
                pass
        await send({"type": "http.response.body", "body": b"done"})

    pieces = chunked(*[b"x" * 16384] * 8)
    async with serving(limited(answers_first), limits=HttpLimits()) as port:
        answer = await exchange(port, [post("/x", b"Transfer-Encoding: chunked\r\n"), *pieces])
    assert answer.status == 200
    assert not answer.raw.endswith(b"0\r\n\r\n")  # the chunked response never ends: the connection did
    assert b"done" not in answer.raw


async def test_a_body_within_the_cap_streams_to_the_application_before_it_has_all_arrived() -> None:
    app = RecordingApp()
    async with serving(limited(app), limits=HttpLimits()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(BOUND_SECONDS):
                writer.write(post("/big/x", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n"))
                writer.write(chunked(b"x" * 1000)[0])
                await app.first_piece.wait()  # the first piece is there while the rest is still unsent
                writer.write(b"".join(chunked(b"y" * 2000)))
                answer = await reader.read()
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert app.bodies == [3000]


async def test_the_first_rule_whose_prefix_matches_sets_the_cap() -> None:
    app = RecordingApp()
    body = b"x" * (2 * CAP)
    async with serving(limited(app), limits=HttpLimits()) as port:
        within = await exchange(
            port, [post("/big/x", b"Content-Length: %d\r\n" % len(body), b"Connection: close\r\n") + body]
        )
        over = await exchange(port, [post("/x", b"Content-Length: %d\r\n" % len(body)) + body])
    assert within.status == 200
    assert over.status == 413
    assert app.bodies == [len(body)]


async def test_a_json_body_with_more_values_than_allowed_is_refused_422_before_the_application() -> None:
    app = RecordingApp()
    document = b"{" + b",".join(b'"k%d": 0' % i for i in range(101)) + b"}"
    head = post("/x", b"Content-Type: application/json\r\n", b"Content-Length: %d\r\n" % len(document))
    async with serving(limited(app, max_json_values=100), limits=HttpLimits()) as port:
        answer = await exchange(port, [head + document])
    assert answer.status == 422
    assert answer.json["error"] == "invalid_input"
    assert answer.json["detail"][0]["type"] == "too_many_values"
    assert app.bodies == []


async def test_a_json_body_within_the_values_limit_reaches_the_application_whole() -> None:
    app = RecordingApp()
    document = b"{" + b",".join(b'"k%d": 0' % i for i in range(100)) + b"}"
    head = post(
        "/x",
        b"Content-Type: application/json\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
    )
    async with serving(limited(app, max_json_values=100), limits=HttpLimits()) as port:
        answer = await exchange(port, [head, *chunked(document[:50], document[50:])])
    assert answer.status == 200
    assert app.bodies == [len(document)]


def test_the_last_rule_must_match_every_path() -> None:
    with pytest.raises(ValueError, match="every path"):
        BodyLimitMiddleware(RecordingApp(), rules=[BodyRule(prefix="/x", max_bytes=1, render=as_json)])


@pytest.mark.parametrize(
    ("body", "limit", "exceeds"),
    [
        (b'{"a": 1, "b": 2}', 2, False),
        (b'{"a": 1, "b": 2, "c": 3}', 2, True),
        (b"[1, 2, 3]", 2, True),
        (b'{"a": [1, 2]}', 2, True),  # a member plus two items
        (b'{"a": {"b": {"c": 1}}}', 3, False),
        (b'{"a": {"b": {"c": 1}}}', 2, True),
        (b'[[], [[1]], {"x": []}]', 6, False),
        (b'[[], [[1]], {"x": []}]', 5, True),
        (b'"just a string"', 0, False),
        (b"not json {", 0, False),  # the application's decoder answers that one
        (b"[" * 100_000, 0, False),
    ],
)
def test_json_values_count_object_members_and_array_items_at_every_depth(
    body: bytes, limit: int, exceeds: bool
) -> None:
    assert json_values_exceed(body, limit) is exceeds
