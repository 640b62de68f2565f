"""Follow an operation until it ends or pauses, showing its live progress (step and percent)."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kaas_cli.client import KaasClient
from kaas_cli.output import err_console

FINISHED = {"succeeded", "failed", "cancelled"}
# where following stops: an end, or a pause (a rollout waiting for someone to resume, roll back or cancel it)
STOPPED = FINISHED | {"paused"}


class OperationTimeout(Exception):
    pass


def wait_for_operation(
    client: KaasClient, operation_id: str, *, timeout: float, poll_interval: float = 0.5, quiet: bool = False
) -> dict[str, Any]:
    """Poll ``GET /v1/operations/{id}`` until it has ended or paused; return the operation as it stopped."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.fields[kind]}[/]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("operation", total=100, kind="operation", step="pending")
        while True:
            operation: dict[str, Any] = client.get(f"/v1/operations/{operation_id}")
            step = operation.get("step") or operation.get("state", "")
            if operation.get("error") and operation.get("state") not in STOPPED:
                step = f"{step} (retrying: {operation['error']})"
            progress.update(
                task,
                completed=operation.get("progress", 0),
                kind=operation.get("kind", "operation"),
                step=step,
            )
            if operation.get("state") in STOPPED:
                return operation
            if time.monotonic() > deadline:
                raise OperationTimeout(
                    f"operation {operation_id} still {operation.get('state')} at step {step!r}"
                    f" after {timeout:.0f}s;"
                    " it goes on in the background: follow it with `kaas operation watch`"
                )
            time.sleep(poll_interval)
