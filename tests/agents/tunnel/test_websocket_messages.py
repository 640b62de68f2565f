"""The framing of relayed WebSocket messages on a tunnel stream (``agents.tunnel.websocket``), by bytes."""

from __future__ import annotations

import pytest

from agents.tunnel.http import HttpRequestHead, decode_request_metadata, encode_request_metadata
from agents.tunnel.websocket import (
    Message,
    MessageDecoder,
    MessageKind,
    WebSocketRelayError,
    encode_close,
    encode_message,
    parse_subprotocols,
)


def test_messages_survive_any_split_of_the_bytes() -> None:
    wire = (
        encode_message(MessageKind.BINARY, b"\x01hello")
        + encode_message(MessageKind.TEXT, "héllo".encode())
        + encode_message(MessageKind.BINARY, b"")
        + encode_close(1000, "done")
    )
    for cut in range(len(wire) + 1):
        decoder = MessageDecoder()
        messages = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert messages == [
            Message(MessageKind.BINARY, b"\x01hello"),
            Message(MessageKind.TEXT, "héllo".encode()),
            Message(MessageKind.BINARY, b""),
            Message(MessageKind.CLOSE, b"\x03\xe8done"),
        ]
        assert decoder.pending == 0
    assert messages[-1].close_code == 1000
    assert messages[-1].close_reason == "done"


def test_a_byte_at_a_time_keeps_an_incomplete_message_pending() -> None:
    wire = encode_message(MessageKind.BINARY, b"abc")
    decoder = MessageDecoder()
    for byte in wire[:-1]:
        assert decoder.feed(bytes([byte])) == []
    assert decoder.pending == len(wire) - 1
    assert decoder.feed(wire[-1:]) == [Message(MessageKind.BINARY, b"abc")]


def test_an_oversize_or_unknown_message_is_refused_before_it_is_buffered() -> None:
    decoder = MessageDecoder(max_message_bytes=10)
    with pytest.raises(WebSocketRelayError, match="over the limit of 10"):
        decoder.feed(encode_message(MessageKind.BINARY, b"x" * 11)[:5])  # the header alone tells
    with pytest.raises(WebSocketRelayError, match="unknown relayed message kind 7"):
        MessageDecoder().feed(b"\x07\x00\x00\x00\x00")


def test_a_close_without_a_code_reports_no_status_and_a_long_reason_is_cut() -> None:
    assert Message(MessageKind.CLOSE, b"").close_code == 1005
    [close] = MessageDecoder().feed(encode_close(4000, "x" * 500))
    assert close.close_code == 4000
    assert len(close.payload) == 2 + 123  # a close frame carries at most 125 bytes


def test_subprotocol_headers_are_split_in_order() -> None:
    assert parse_subprotocols(["v5.channel.k8s.io, v4.channel.k8s.io", "base64.channel.k8s.io"]) == [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "base64.channel.k8s.io",
    ]


def test_the_websocket_flag_travels_in_the_request_head_and_is_validated() -> None:
    head = HttpRequestHead(method="GET", path="/api/v1/x", user="kaas:u", websocket=True)
    assert decode_request_metadata(encode_request_metadata(head)).websocket is True
    plain = encode_request_metadata(HttpRequestHead(method="GET", path="/", user="kaas:u"))
    assert "websocket" not in plain  # an older agent sees exactly what it saw before
    with pytest.raises(ValueError, match="websocket flag must be a boolean"):
        decode_request_metadata({**plain, "websocket": "yes"})
