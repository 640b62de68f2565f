"""An HTTPS client that sends a request target exactly as given, for the tests of hostile paths.

httpx (like most clients) normalizes a URL before sending it: it removes dot segments, so it cannot send
``/k8s/clusters/<A>/../../<B>/...`` as an attacker with ``curl --path-as-is`` would. This one writes the
request line itself (h11 frames it) over TLS and reads the whole answer.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


async def raw_request(
    base_url: str,
    ca_file: str,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> RawResponse:
    """``method target`` sent verbatim to ``base_url`` (https, trusting ``ca_file``); the whole answer."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    context = ssl.create_default_context(cafile=ca_file)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port, ssl=context), timeout
    )
    connection = h11.Connection(our_role=h11.CLIENT)
    all_headers = [("Host", parts.netloc), ("Connection", "close"), *(headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers.append(("Content-Length", str(len(body))))
    try:
        writer.write(connection.send(h11.Request(method=method, target=target, headers=all_headers)))
        if body:
            writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
        return await asyncio.wait_for(_read_response(connection, reader), timeout)
    finally:
        writer.close()


async def _read_response(connection: h11.Connection, reader: asyncio.StreamReader) -> RawResponse:
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(65536))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    assert response is not None, "the server closed the connection without an answer"
    return RawResponse(
        status=response.status_code,
        headers=[(name.decode().lower(), value.decode("latin-1")) for name, value in response.headers],
        body=bytes(body),
    )
