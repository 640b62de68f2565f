"""What every API-calling command shares: loading the config, opening the client, reporting errors, the
``-o/--output`` and ``--project`` options, following an operation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from kaas_cli.client import ApiError, KaasClient
from kaas_cli.config import CliConfig
from kaas_cli.output import OutputFormat, err_console
from kaas_cli.wait import OperationTimeout, wait_for_operation

OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table, json or yaml")]
ProjectOption = Annotated[str | None, typer.Option("--project", "-p", help="project (default: from config)")]
WaitOption = Annotated[bool, typer.Option("--wait", help="follow the operation until it ends")]
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait with --wait")]


@dataclass(frozen=True)
class Wiring:
    """What the caller of the ``kaas`` app may hand every command as the context object
    (``app(obj=Wiring(...))``; ``kaas_cli.main`` passes it on to ``use_wiring``): an HTTP transport to the
    API instead of the network, for a program that runs the API in its own process. A shell's ``kaas``
    passes nothing."""

    transport: httpx.BaseTransport | None = None


_wiring: ContextVar[Wiring] = ContextVar("kaas_cli_wiring", default=Wiring())  # noqa: B039 (frozen)


def use_wiring(wiring: Wiring) -> None:
    _wiring.set(wiring)


def open_client(config: CliConfig) -> KaasClient:
    return KaasClient(config, transport=_wiring.get().transport)


@contextmanager
def api_client() -> Iterator[tuple[KaasClient, CliConfig]]:
    """Open a client from the CLI config; turn API errors into a one-line message and exit code 1."""
    config = CliConfig.load()
    try:
        with open_client(config) as client:
            yield client, config
    except ApiError as exc:
        err_console.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        raise typer.Exit(1) from exc


def resolve_project(config: CliConfig, project: str | None) -> str:
    chosen = project or config.project
    if not chosen:
        err_console.print(
            "[red]error:[/] no project given: pass --project or set one with `kaas login --project`"
        )
        raise typer.Exit(2)
    return chosen


def items(answer: Any) -> list[dict[str, Any]]:
    """The list in an API answer (a bare list, or a page's ``items``)."""
    if isinstance(answer, dict):
        return list(answer.get("items", []))
    return list(answer or [])


MaxSurgeOption = Annotated[
    int | None, typer.Option("--max-surge", help="servers above a pool's count while it rolls (default 1)")
]
MaxUnavailableOption = Annotated[
    int | None,
    typer.Option("--max-unavailable", help="Ready nodes below a pool's count while it rolls (default 0)"),
]
DrainTimeoutOption = Annotated[
    int | None,
    typer.Option("--drain-timeout", help="seconds a node's drain may take before the upgrade pauses (600)"),
]
NodeReadyTimeoutOption = Annotated[
    int | None,
    typer.Option(
        "--node-ready-timeout", help="seconds a new node may take to be Ready before the upgrade pauses (600)"
    ),
]


def upgrade_strategy(
    *,
    max_surge: int | None,
    max_unavailable: int | None,
    drain_timeout: int | None,
    node_ready_timeout: int | None,
) -> dict[str, int] | None:
    """The ``upgrade_strategy`` body of the options given (None: all the server's defaults)."""
    given = {
        "max_surge": max_surge,
        "max_unavailable": max_unavailable,
        "drain_timeout_seconds": drain_timeout,
        "node_ready_timeout_seconds": node_ready_timeout,
    }
    strategy = {key: value for key, value in given.items() if value is not None}
    return strategy or None


def stopped_short(final: dict[str, Any]) -> str | None:
    """Why a followed operation did not succeed (None when it did)."""
    state = final.get("state")
    if state == "failed":
        return f"[red]operation failed:[/] {escape(final.get('error') or 'no message')}"
    if state == "paused":
        return (
            f"[yellow]operation paused:[/] {escape(final.get('paused_reason') or 'no reason given')}; "
            f"resume, roll back or cancel it: `kaas operation resume|rollback|cancel {final.get('id')}`"
        )
    if state == "cancelled":
        return "[yellow]operation cancelled[/]"
    return None


def follow_operation(
    client: KaasClient, operation: dict[str, Any], *, timeout: float, fmt: OutputFormat
) -> dict[str, Any]:
    """Follow ``operation`` until it ends or pauses (live progress on stderr for tables); exit 1 with the
    reason if it failed, paused or was cancelled, 3 if it is still going after ``timeout`` seconds."""
    try:
        final = wait_for_operation(
            client, operation["id"], timeout=timeout, quiet=fmt is not OutputFormat.TABLE
        )
    except OperationTimeout as exc:
        err_console.print(f"[yellow]timeout:[/] {exc}")
        raise typer.Exit(3) from exc
    problem = stopped_short(final)
    if problem is not None:
        err_console.print(problem, highlight=False)
        raise typer.Exit(1)
    return final
