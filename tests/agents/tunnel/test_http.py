"""HTTP over one tunnel stream: the request head in DIAL metadata, the length-prefixed response head."""

from __future__ import annotations

import json
import struct

import pytest

from agents.tunnel.http import (
    MAX_HEAD_BYTES,
    HttpHeadError,
    HttpRequestHead,
    ResponseHeadDecoder,
    decode_request_metadata,
    encode_request_metadata,
    encode_response_head,
)


def test_a_request_head_survives_the_dial_metadata_round_trip() -> None:
    head = HttpRequestHead(
        method="POST",
        path="/api/v1/namespaces/default/configmaps?dryRun=All",
        user="kaas:alice",
        groups=("kaas:authenticated", "kaas:member"),
        headers=(("Content-Type", "application/json"),),
        body=True,
    )
    metadata = json.loads(json.dumps(encode_request_metadata(head)))
    assert metadata["kind"] == "http"
    assert decode_request_metadata(metadata) == head


@pytest.mark.parametrize(
    "metadata",
    [
        {"kind": "status"},
        {"kind": "http", "method": "", "path": "/", "user": "u"},
        {"kind": "http", "method": "GET", "path": 3, "user": "u"},
        {"kind": "http", "method": "GET", "path": "/", "user": None},
        {"kind": "http", "method": "GET", "path": "/", "user": "u", "groups": "kaas:member"},
        {"kind": "http", "method": "GET", "path": "/", "user": "u", "headers": [["a"]]},
        {"kind": "http", "method": "GET", "path": "/", "user": "u", "headers": [["a", 1]]},
        {"kind": "http", "method": "GET", "path": "/", "user": "u", "body": "yes"},
        {"kind": "http", "method": "GET", "path": "/", "user": "u", "headers": [["a", "b"]] * 1000},
    ],
)
def test_malformed_request_metadata_is_refused(metadata: dict[str, object]) -> None:
    with pytest.raises(HttpHeadError):
        decode_request_metadata(metadata)


def test_an_oversized_request_head_is_refused_before_it_is_sent() -> None:
    head = HttpRequestHead(method="GET", path="/", user="u", headers=(("X-Big", "x" * MAX_HEAD_BYTES),))
    with pytest.raises(HttpHeadError, match="larger than"):
        encode_request_metadata(head)


def test_the_response_head_is_length_prefixed_json_followed_by_the_body() -> None:
    encoded = encode_response_head(201, [("content-type", "application/json")])
    (length,) = struct.unpack("!I", encoded[:4])
    assert json.loads(encoded[4 : 4 + length]) == {
        "status": 201,
        "headers": [["content-type", "application/json"]],
    }
    decoder = ResponseHeadDecoder()
    result = decoder.feed(encoded + b'{"kind":')
    assert result is not None
    head, rest = result
    assert (head.status, head.headers, rest) == (201, (("content-type", "application/json"),), b'{"kind":')


def test_the_response_head_may_arrive_one_byte_at_a_time() -> None:
    encoded = encode_response_head(200, [("a", "b")])
    decoder = ResponseHeadDecoder()
    results = [decoder.feed(encoded[i : i + 1]) for i in range(len(encoded))]
    assert results[:-1] == [None] * (len(encoded) - 1)
    final = results[-1]
    assert final is not None
    assert final[0].status == 200
    assert final[1] == b""


def test_a_response_head_announcing_more_than_the_limit_is_refused_at_once() -> None:
    decoder = ResponseHeadDecoder(max_head_bytes=100)
    with pytest.raises(HttpHeadError, match="limit"):
        decoder.feed(struct.pack("!I", 101))


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1]", b'{"status": 99}', b'{"status": true}', b'{"status": 200, "headers": {"a": "b"}}'],
)
def test_a_malformed_response_head_is_refused(payload: bytes) -> None:
    with pytest.raises(HttpHeadError):
        ResponseHeadDecoder().feed(struct.pack("!I", len(payload)) + payload)


def test_an_invalid_status_cannot_be_encoded() -> None:
    with pytest.raises(HttpHeadError):
        encode_response_head(1000, [])
