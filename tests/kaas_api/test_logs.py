"""Structured logs: one JSON object per line, the request id on every line of a request, no secrets.

``configure_logging`` is what every ``kaas`` entry point calls; here it writes into a buffer, and the
fixture takes it out again so the rest of the suite logs as before.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kaas_core.logs import REDACTED, configure_logging, unconfigure_logging

log = logging.getLogger("tests.kaas_api.test_logs")


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root_level = logging.getLogger().level
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    yield stream
    unconfigure_logging()
    logging.getLogger().setLevel(root_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def logging_app(app: FastAPI) -> FastAPI:
    @app.get("/probe/log")
    def probe() -> dict[str, str]:
        log.info("probe %s", "called")
        structlog.get_logger("tests.structlog").info("probe via structlog", step="one")
        return {"status": "ok"}

    return app


def test_every_line_of_a_request_carries_its_request_id(output: io.StringIO, logging_app: FastAPI) -> None:
    with TestClient(logging_app) as client:
        response = client.get("/probe/log", headers={"X-Request-ID": "client-chosen-id-42"})
        assert response.status_code == 200
        other = client.get("/probe/log")
    probes = [line for line in lines(output) if line["event"].startswith("probe")]
    assert [line["event"] for line in probes] == ["probe called", "probe via structlog"] * 2
    assert [line["request_id"] for line in probes[:2]] == ["client-chosen-id-42"] * 2
    assert {line["request_id"] for line in probes[2:]} == {other.headers["x-request-id"]}
    assert probes[0]["logger"] == "tests.kaas_api.test_logs"
    assert probes[0]["level"] == "info"
    assert probes[1]["step"] == "one"


def test_a_line_outside_any_request_has_no_request_id(output: io.StringIO) -> None:
    log.warning("no request here")
    (line,) = lines(output)
    assert "request_id" not in line
    assert line["level"] == "warning"


def test_tokens_and_authorization_headers_never_reach_the_output(output: io.StringIO) -> None:
    token = "kaas_" + "A" * 43
    log.info("calling with Authorization: Bearer %s", "s3cr3t-value")
    log.info("issued %s", token)
    structlog.get_logger("tests").info(
        "headers", authorization="Bearer abc", agent_token="kaasagent_xyz", user_data="#cloud-config"
    )
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        log.exception("failed")
    text = output.getvalue()
    for secret in ("s3cr3t-value", token, "Bearer abc", "kaasagent_xyz", "#cloud-config"):
        assert secret not in text
    headers = lines(output)[2]
    assert headers["authorization"] == headers["agent_token"] == headers["user_data"] == REDACTED


def test_the_console_format_is_one_readable_line(output: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging(json=False, level="INFO", stream=stream)
    log.info("hello %s", "there")
    assert "hello there" in stream.getvalue()
    assert output.getvalue() == ""  # reconfiguring replaced the JSON handler rather than adding one
