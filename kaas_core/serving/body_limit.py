"""Caps request bodies per route before the application reads them: a pure ASGI middleware.

Owned by ``kaas_core.serving``; installed by ``kaas_api.app.create_app`` (small JSON and form bodies, a
separate cap for the k8s proxy) and by ``kaas_tunnel.server`` (its internal endpoint). The first
``BodyRule`` whose path prefix matches applies; the last one matches every path.

- A ``Content-Length`` over the cap is answered 413 at once, before the application runs: nothing of the
  body is read, and a client that sent ``Expect: 100-continue`` never sends it.
- A body without ``Content-Length`` (chunked) streams through as the application reads it, never buffered,
  and is counted: past the cap the application's ``receive()`` raises ``RequestBodyTooLarge``. The answer
  is 413 while no response has started (whatever the application tried to answer instead); after that the
  connection is aborted, the only honest signal left.
- Where a rule sets ``max_json_values``, a JSON body (already bounded by the cap) is read whole first and
  refused with 422 when it holds more values than that (object members plus array items): pydantic reports
  every unknown key, so an 11 MB body of a million keys took 20 s and 1.5 GB to refuse, and parsing it
  once more here costs a tenth of a second per MiB.

What the refusal looks like is the rule's ``render``: the API's error shape, or a Kubernetes ``Status`` for
kubectl. The rest of a refused body is the protocol's to drop (``kaas_core.serving.limits``: it reads it for
a bounded time, then closes), so that a client still sending reads the 413 rather than a reset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Refusal:
    """What the middleware answers; a rule's ``render`` turns it into the JSON body."""

    status: int
    error: str
    message: str
    detail: Any


Render = Callable[[Refusal], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class BodyRule:
    """Bodies of paths starting with ``prefix`` ("" = every path) are at most ``max_bytes``."""

    prefix: str
    max_bytes: int
    render: Render
    max_json_values: int | None = None


class RequestBodyTooLarge(Exception):
    """Raised from ``receive()`` when a body without ``Content-Length`` grows past its route's cap."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:  # the HTTP parser refuses these; nothing to add here
        return None


def _is_json(scope: Scope) -> bool:
    content_type = (_header(scope, b"content-type") or b"").split(b";", 1)[0].strip().lower()
    return content_type == b"application/json" or (
        content_type.startswith(b"application/") and content_type.endswith(b"+json")
    )


def _has_body(scope: Scope) -> bool:
    return bool(_content_length(scope)) or _header(scope, b"transfer-encoding") is not None


def json_values_exceed(body: bytes, limit: int) -> bool:
    """Whether ``body`` is JSON holding more than ``limit`` values; stops counting at the limit.

    Not JSON (or nested too deeply to parse) is not for this check to answer: the application's own
    decoding says what is wrong with it.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return False
    count = 0
    pending = [document]
    while pending:
        value = pending.pop()
        children: Any
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        count += len(children)
        if count > limit:
            return True
        pending.extend(children)
    return False


async def _answer(send: Send, rule: BodyRule, refusal: Refusal) -> None:
    body = json.dumps(rule.render(refusal)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(max_bytes: int) -> Refusal:
    return Refusal(
        413,
        "request_too_large",
        f"the request body is larger than {max_bytes} bytes, the limit of this route",
        {"max_body_bytes": max_bytes},
    )


class BodyLimitMiddleware:
    """See the module docstring. ``rules``: first matching prefix wins; the last must have prefix ""."""

    def __init__(self, app: ASGIApp, *, rules: Sequence[BodyRule]) -> None:
        if not rules or rules[-1].prefix != "":
            raise ValueError("the last body rule must match every path (prefix '')")
        self.app = app
        self.rules = tuple(rules)

    def rule_for(self, path: str) -> BodyRule:
        return next(rule for rule in self.rules if path.startswith(rule.prefix))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope["path"])
        length = _content_length(scope)
        if length is not None and length > rule.max_bytes:
            await _answer(send, rule, _too_large(rule.max_bytes))
            return
        if rule.max_json_values is not None and _is_json(scope) and _has_body(scope):
            await self._checked_json(rule, rule.max_json_values, scope, receive, send)
            return
        await self._counted(rule, scope, receive, send)

    async def _counted(self, rule: BodyRule, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        exceeded = False
        started = False  # a response head went out
        answered = False  # ours

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > rule.max_bytes:
                    exceeded = True
                    raise RequestBodyTooLarge(rule.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, answered
            if exceeded:
                if started:
                    raise RequestBodyTooLarge(rule.max_bytes)
                if not answered:  # the application answering its failed read: ours replaces it
                    answered = True
                    await _answer(send, rule, _too_large(rule.max_bytes))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
            if not answered:
                await _answer(send, rule, _too_large(rule.max_bytes))

    async def _checked_json(
        self, rule: BodyRule, max_values: int, scope: Scope, receive: Receive, send: Send
    ) -> None:
        pieces: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            piece = message.get("body", b"")
            size += len(piece)
            if size > rule.max_bytes:
                await _answer(send, rule, _too_large(rule.max_bytes))
                return
            pieces.append(piece)
            if not message.get("more_body", False):
                break
        body = b"".join(pieces)
        del pieces
        if json_values_exceed(body, max_values):
            text = f"the JSON body holds more than {max_values} values (object members and array items)"
            problem = {"field": "", "message": text, "type": "too_many_values"}
            refusal = Refusal(422, "invalid_input", text, [problem])
            await _answer(send, rule, refusal)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
