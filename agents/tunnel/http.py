"""How one HTTP exchange rides on one tunnel stream. Pure: standard library only, no I/O.

Owned by ``agents.tunnel``. Used by kaas's tunnel server (``kaas_tunnel``), which opens a stream per
proxied kubectl request, and by the agent runtime (``agents.runtime``), which answers it.

- The DIAL metadata is the request head: ``{"kind": "http", "method", "path" (with the query), "headers"
  (a list of [name, value] pairs), "user", "groups", "body" (whether a request body follows), and for a
  WebSocket upgrade "websocket": true (then ``agents.tunnel.websocket`` says what follows)}``.
- The request body is the stream's DATA from kaas until kaas half-closes the stream.
- The agent's first bytes back are the response head: a 4-byte big-endian length and that many bytes of
  JSON ``{"status": int, "headers": [[name, value], ...]}``; the response body follows until the agent
  half-closes.

Everything decoded here is bounded (``MAX_HEAD_BYTES``, ``MAX_HEADERS``); bad input raises
``HttpHeadError`` and never anything else.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HTTP_KIND = "http"
STATUS_KIND = "status"
MAX_HEAD_BYTES = 32 * 1024  # a request head must also fit in one DIAL frame (64 KiB by default)
MAX_HEADERS = 256
MAX_GROUPS = 64
_LENGTH = struct.Struct("!I")


class HttpHeadError(ValueError):
    """A request or response head that is malformed or larger than the limits."""


@dataclass(frozen=True, kw_only=True)
class HttpRequestHead:
    method: str
    path: str
    user: str
    groups: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bool = False
    websocket: bool = False  # a WebSocket upgrade: messages follow a 101 (agents.tunnel.websocket)


@dataclass(frozen=True, kw_only=True)
class HttpResponseHead:
    status: int
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _header_pairs(raw: Any, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or len(raw) > MAX_HEADERS:
        raise HttpHeadError(f"{what} headers must be a list of at most {MAX_HEADERS} [name, value] pairs")
    pairs: list[tuple[str, str]] = []
    for item in raw:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
        ):
            raise HttpHeadError(f"{what} headers must be [name, value] string pairs")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def encode_request_metadata(head: HttpRequestHead) -> dict[str, Any]:
    """The DIAL metadata for ``head``; ``HttpHeadError`` if it would exceed ``MAX_HEAD_BYTES``."""
    metadata: dict[str, Any] = {
        "kind": HTTP_KIND,
        "method": head.method,
        "path": head.path,
        "headers": [list(pair) for pair in head.headers],
        "user": head.user,
        "groups": list(head.groups),
        "body": head.body,
    }
    if head.websocket:
        metadata["websocket"] = True
    if len(json.dumps(metadata).encode()) > MAX_HEAD_BYTES:
        raise HttpHeadError(f"the request head is larger than {MAX_HEAD_BYTES} bytes")
    if len(head.headers) > MAX_HEADERS or len(head.groups) > MAX_GROUPS:
        raise HttpHeadError("the request has too many headers or groups")
    return metadata


def decode_request_metadata(metadata: dict[str, Any]) -> HttpRequestHead:
    """The request head a DIAL carries; ``HttpHeadError`` if it is not a valid one."""
    if metadata.get("kind") != HTTP_KIND:
        raise HttpHeadError(f"not an HTTP stream: kind {metadata.get('kind')!r}")
    method, path, user = metadata.get("method"), metadata.get("path"), metadata.get("user")
    if not isinstance(method, str) or not method or len(method) > 16:
        raise HttpHeadError("the request method must be a short non-empty string")
    if not isinstance(path, str) or not path:
        raise HttpHeadError("the request path must be a non-empty string")
    if not isinstance(user, str):
        raise HttpHeadError("the request user must be a string")
    groups = metadata.get("groups", [])
    if (
        not isinstance(groups, list)
        or len(groups) > MAX_GROUPS
        or not all(isinstance(group, str) for group in groups)
    ):
        raise HttpHeadError(f"the request groups must be a list of at most {MAX_GROUPS} strings")
    body = metadata.get("body", False)
    if not isinstance(body, bool):
        raise HttpHeadError("the request body flag must be a boolean")
    websocket = metadata.get("websocket", False)
    if not isinstance(websocket, bool):
        raise HttpHeadError("the request websocket flag must be a boolean")
    return HttpRequestHead(
        method=method,
        path=path,
        user=user,
        groups=tuple(groups),
        headers=_header_pairs(metadata.get("headers", []), "request"),
        body=body,
        websocket=websocket,
    )


def encode_response_head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    """The length-prefixed JSON response head the agent sends before the body."""
    if not 100 <= status <= 599:
        raise HttpHeadError(f"invalid HTTP status {status}")
    payload = json.dumps({"status": status, "headers": [list(pair) for pair in headers]}).encode()
    if len(payload) > MAX_HEAD_BYTES:
        raise HttpHeadError(f"the response head is larger than {MAX_HEAD_BYTES} bytes")
    return _LENGTH.pack(len(payload)) + payload


class ResponseHeadDecoder:
    """Feed the first bytes of the agent's answer until ``feed`` returns the head (and the body's start)."""

    def __init__(self, *, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._max = max_head_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[HttpResponseHead, bytes] | None:
        """None while the head is incomplete; then the head plus any body bytes that followed it."""
        self._buffer += data
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self._max:
            raise HttpHeadError(f"the response head announces {length} bytes, the limit is {self._max}")
        end = _LENGTH.size + length
        if len(self._buffer) < end:
            return None
        raw, rest = bytes(self._buffer[_LENGTH.size : end]), bytes(self._buffer[end:])
        self._buffer.clear()
        return _decode_response_head(raw), rest

    def end_of_stream(self) -> None:
        """The stream ended: raise unless a head was already returned and nothing is left half-read."""
        raise HttpHeadError(f"the stream ended inside the response head ({len(self._buffer)} bytes read)")


def _decode_response_head(raw: bytes) -> HttpResponseHead:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise HttpHeadError(f"the response head is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise HttpHeadError("the response head must be a JSON object")
    status = document.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise HttpHeadError(f"invalid HTTP status in the response head: {status!r}")
    return HttpResponseHead(status=status, headers=_header_pairs(document.get("headers", []), "response"))
