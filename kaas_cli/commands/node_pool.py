"""``kaas cluster node-pool list|get|add|set|upgrade|delete``: a cluster's node pools, their size, labels,
taints, autoscaling bounds and Kubernetes version.

Labels and taints are written the way ``kubectl label`` and ``kubectl taint`` write them: ``key=value`` sets
a label, ``key-`` removes it; ``key=value:Effect`` (or ``key:Effect``) adds a taint, ``key:Effect-`` removes
that taint and ``key-`` every taint of the key. ``set`` reads the pool, applies the changes and sends the
whole new maps (the API replaces labels and taints as a whole): a change someone makes between the read and
the write is overwritten.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kaas_cli.client import KaasClient
from kaas_cli.commands.common import (
    DrainTimeoutOption,
    MaxSurgeOption,
    MaxUnavailableOption,
    NodeReadyTimeoutOption,
    OutputOption,
    ProjectOption,
    TimeoutOption,
    WaitOption,
    api_client,
    follow_operation,
    items,
    resolve_project,
    upgrade_strategy,
)
from kaas_cli.output import OutputFormat, console, err_console, print_data, print_object, print_rows

app = typer.Typer(help="Node pools of a cluster: size, labels, taints.", no_args_is_help=True)

POOL_COLUMNS = [
    ("name", "NAME"),
    ("flavor", "FLAVOR"),
    ("count", "COUNT"),
    ("kubernetes_version", "VERSION"),
    ("labels", "LABELS"),
    ("taints", "TAINTS"),
    ("created_at", "CREATED"),
]

ClusterArgument = Annotated[str, typer.Argument(help="cluster name or id")]
PoolArgument = Annotated[str, typer.Argument(help="node pool name")]
LabelOption = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="KEY=VALUE sets a label, KEY- removes it (repeatable)"),
]
TaintOption = Annotated[
    list[str] | None,
    typer.Option(
        "--taint",
        "-t",
        help="KEY[=VALUE]:EFFECT adds a taint (NoSchedule, PreferNoSchedule, NoExecute); "
        "KEY:EFFECT- removes it, KEY- removes every taint of KEY (repeatable)",
    ),
]


def apply_labels(labels: dict[str, str], changes: list[str]) -> dict[str, str]:
    """``labels`` after ``KEY=VALUE`` (set) and ``KEY-`` (remove) changes, in order."""
    result = dict(labels)
    for change in changes:
        if change.endswith("-") and "=" not in change:
            result.pop(change[:-1], None)
            continue
        key, equals, value = change.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{change!r}: expected KEY=VALUE or KEY-", param_hint="--label")
        result[key] = value
    return result


def parse_taint(text: str) -> dict[str, str]:
    """``KEY=VALUE:EFFECT`` or ``KEY:EFFECT`` → a taint body."""
    spec, colon, effect = text.rpartition(":")
    key, _equals, value = spec.partition("=")
    if not colon or not key or not effect:
        raise typer.BadParameter(
            f"{text!r}: expected KEY=VALUE:EFFECT or KEY:EFFECT, e.g. dedicated=web:NoSchedule",
            param_hint="--taint",
        )
    return {"key": key, "value": value, "effect": effect}


def apply_taints(taints: list[dict[str, str]], changes: list[str]) -> list[dict[str, str]]:
    """``taints`` after adding (``KEY[=VALUE]:EFFECT``) and removing (``KEY:EFFECT-``, ``KEY-``) taints."""
    result = [dict(t) for t in taints]
    for change in changes:
        if change.endswith("-"):
            spec = change[:-1]
            if ":" in spec:
                gone = parse_taint(spec)
                result = [t for t in result if (t["key"], t["effect"]) != (gone["key"], gone["effect"])]
            else:
                result = [t for t in result if t["key"] != spec]
            continue
        added = parse_taint(change)
        # one taint per key and effect, as Kubernetes keeps them: a new value replaces the old one
        result = [t for t in result if (t["key"], t["effect"]) != (added["key"], added["effect"])]
        result.append(added)
    return result


def _pools_path(project: str, cluster: str) -> str:
    return f"/v1/projects/{project}/clusters/{cluster}/node-pools"


def _accepted(
    client: KaasClient,
    result: dict[str, Any],
    *,
    done: str,
    wait: bool,
    timeout: float,
    output: OutputFormat,
) -> None:
    """Print a change's answer (the pool and its operation); with ``wait``, follow the operation first."""
    if output is OutputFormat.TABLE:
        err_console.print(f"{done}, operation {result['operation']['id']}")
    if wait:
        result["operation"] = follow_operation(client, result["operation"], timeout=timeout, fmt=output)
    if output is not OutputFormat.TABLE:
        print_data(result, output)
    elif result.get("node_pool"):
        print_object(result["node_pool"], output)


@app.command("list")
def list_pools(
    cluster: ClusterArgument, project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """The cluster's node pools."""
    with api_client() as (client, config):
        pools = client.get(_pools_path(resolve_project(config, project), cluster))
        print_rows(items(pools), POOL_COLUMNS, output)


@app.command()
def get(
    cluster: ClusterArgument,
    pool: PoolArgument,
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one node pool."""
    with api_client() as (client, config):
        print_object(client.get(f"{_pools_path(resolve_project(config, project), cluster)}/{pool}"), output)


@app.command()
def add(
    cluster: ClusterArgument,
    pool: PoolArgument,
    flavor: Annotated[str, typer.Option(help="flavor of the pool's servers (see `kaas region get`)")],
    count: Annotated[int, typer.Option(help="number of nodes")] = 1,
    label: LabelOption = None,
    taint: TaintOption = None,
    project: ProjectOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a node pool to a cluster."""
    body = {
        "name": pool,
        "flavor": flavor,
        "count": count,
        "labels": apply_labels({}, label or []),
        "taints": apply_taints([], taint or []),
    }
    with api_client() as (client, config):
        result = client.post(_pools_path(resolve_project(config, project), cluster), body)
        _accepted(client, result, done=f"node pool {pool} added", wait=wait, timeout=timeout, output=output)


@app.command("set")
def set_pool(
    cluster: ClusterArgument,
    pool: PoolArgument,
    count: Annotated[int | None, typer.Option(help="new number of nodes")] = None,
    label: LabelOption = None,
    taint: TaintOption = None,
    project: ProjectOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a node pool's size, labels or taints."""
    if count is None and not label and not taint:
        raise typer.BadParameter("nothing to change: give --count, --label or --taint")
    with api_client() as (client, config):
        path = f"{_pools_path(resolve_project(config, project), cluster)}/{pool}"
        body: dict[str, Any] = {}
        if count is not None:
            body["count"] = count
        if label or taint:
            current = client.get(path)
            if label:
                body["labels"] = apply_labels(current.get("labels") or {}, label)
            if taint:
                body["taints"] = apply_taints(current.get("taints") or [], taint)
        result = client.patch(path, body)
        _accepted(client, result, done=f"node pool {pool} changed", wait=wait, timeout=timeout, output=output)


@app.command()
def upgrade(
    cluster: ClusterArgument,
    pool: PoolArgument,
    version: Annotated[str | None, typer.Argument(help="Kubernetes version (default: the cluster's)")] = None,
    max_surge: MaxSurgeOption = None,
    max_unavailable: MaxUnavailableOption = None,
    drain_timeout: DrainTimeoutOption = None,
    node_ready_timeout: NodeReadyTimeoutOption = None,
    project: ProjectOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the upgrade until it ends or pauses (exit 1 if it pauses)")
    ] = False,
    timeout: TimeoutOption = 7200,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Upgrade one pool's nodes, one by one and drained first, up to the control plane's version."""
    body: dict[str, Any] = {}
    if version is not None:
        body["kubernetes_version"] = version
    strategy = upgrade_strategy(
        max_surge=max_surge,
        max_unavailable=max_unavailable,
        drain_timeout=drain_timeout,
        node_ready_timeout=node_ready_timeout,
    )
    if strategy is not None:
        body["upgrade_strategy"] = strategy
    with api_client() as (client, config):
        path = f"{_pools_path(resolve_project(config, project), cluster)}/{pool}/upgrade"
        result = client.post(path, body)
        done = f"upgrade of node pool {pool} accepted"
        _accepted(client, result, done=done, wait=wait, timeout=timeout, output=output)


@app.command()
def delete(
    cluster: ClusterArgument,
    pool: PoolArgument,
    project: ProjectOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a node pool and its nodes."""
    with api_client() as (client, config):
        result = client.delete(f"{_pools_path(resolve_project(config, project), cluster)}/{pool}")
        _accepted(client, result, done=f"node pool {pool} deleted", wait=wait, timeout=timeout, output=output)
        if output is OutputFormat.TABLE and wait:
            console.print(f"node pool {pool} deleted")
