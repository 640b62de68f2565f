"""Fixtures of the CLI command tests: the real API in this process, on the migrated PostgreSQL with the world
of ``tests.kaas_api`` (users of every role, project ``alpha`` with cluster ``c1``, regions ``r1`` and
``spare``), which the ``kaas`` commands reach through an httpx transport instead of the network.

Every command runs as ``kaas`` does from a shell (Typer's ``CliRunner``: argument parsing, the CLI config
file, stdout and stderr, the exit code); only the socket is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kaas_cli import output
from kaas_cli.commands.common import Wiring
from kaas_cli.config import CliConfig
from kaas_cli.main import app as kaas
from tests.kaas_api import conftest as api_tests
from tests.kaas_api.conftest import World

# the API tests' fixtures, used here as they are (the world's database too: tests/kaas_api/conftest.py)
app, client, dispatcher, settings, world, world_snapshot, rollback_database_url = (
    api_tests.app,
    api_tests.client,
    api_tests.dispatcher,
    api_tests.settings,
    api_tests.world,
    api_tests.world_snapshot,
    api_tests.rollback_database_url,
)

API_URL = "https://kaas.test"
RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FORMATS = ("table", "json", "yaml")


class AppTransport(httpx.BaseTransport):
    """Hands each request of the CLI's client to the ASGI app, on the event loop of the world's
    ``TestClient``; ``on_request`` sees each request first (a test moves the world along with it)."""

    def __init__(self, test_client: TestClient) -> None:
        assert test_client.portal is not None, "the TestClient must be entered (its lifespan running)"
        self._portal = test_client.portal
        self._asgi = httpx.ASGITransport(app=test_client.app)
        self.on_request: Callable[[httpx.Request], None] = lambda _request: None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.on_request(request)
        return self._portal.call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._asgi.handle_async_request(request)
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(body))


@dataclass
class Cli:
    """``kaas`` as one user of the world (``login``), against the API in this process."""

    world: World
    config_path: Path
    transport: AppTransport
    runs: list[Result] = field(default_factory=list)

    def login(self, who: str) -> None:
        CliConfig(url=API_URL, token=self.world.tokens[who], project="alpha", region="r1").save(
            self.config_path
        )

    def run(self, *args: str) -> Result:
        result = CliRunner().invoke(kaas, list(args), obj=Wiring(transport=self.transport))
        self.runs.append(result)
        return result

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def shown(self, fmt: str, *args: str) -> Any:
        """What ``kaas ARGS -o FMT`` printed: the parsed document for json and yaml, the text of a table."""
        out = self.ok(*args, "-o", fmt).stdout
        if fmt == "json":
            return json.loads(out)
        if fmt == "yaml":
            return yaml.safe_load(out)
        return out

    def data(self, *args: str) -> Any:
        """``kaas ARGS`` as JSON, after checking that its YAML says the same."""
        as_json = self.shown("json", *args)
        assert self.shown("yaml", *args) == as_json
        return as_json


@pytest.fixture
def cli(world: World, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    path = tmp_path / "cli.yaml"
    monkeypatch.setenv("KAAS_CLI_CONFIG", str(path))
    monkeypatch.setenv("COLUMNS", "400")  # tables as wide as they need: no wrapped cells to reassemble
    # Rich reads COLUMNS once, when a console is made, if it is set by then, and keeps that width; an xdist
    # worker starts with COLUMNS=80, so the CLI's consoles (made at import) are given the width outright
    for console in (output.console, output.err_console):
        monkeypatch.setattr(console, "width", 400)
    runner = Cli(world=world, config_path=path, transport=AppTransport(client))
    runner.login("owner")
    return runner


def rows(table: str) -> list[list[str]]:
    """The rows of a rich table (its header, drawn with heavy lines, first), each a list of stripped cells."""
    lines = [line.replace("┃", "│") for line in table.splitlines()]
    return [[cell.strip() for cell in line.split("│")] for line in lines if "│" in line]


def body_rows(table: str) -> list[list[str]]:
    """The rows of a table with a header, as dicts would be: the header is dropped."""
    return rows(table)[1:]


def column(table: str, heading: str) -> list[str]:
    found = rows(table)
    index = found[0].index(heading)
    return [row[index] for row in found[1:]]


def fields(table: str) -> dict[str, str]:
    """The key/value table of one object (the first table in ``table``)."""
    result: dict[str, str] = {}
    for row in rows(table):
        if len(row) != 2 or row[0] in result:
            break
        result[row[0]] = row[1]
    return result
