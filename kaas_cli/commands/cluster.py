"""``kaas cluster ...``: create, list, get, scale, upgrade, update (the maintenance window) and delete
clusters (optionally following the operation), and list a cluster's nodes. Its node pools (``node-pool``),
kubeconfig and kubeconfig tokens are commands of their own modules, attached here by ``kaas_cli.main``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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
from kaas_cli.commands.operation import OPERATION_COLUMNS
from kaas_cli.output import OutputFormat, console, err_console, print_data, print_object, print_rows, show

app = typer.Typer(help="Kubernetes clusters.", no_args_is_help=True)

CLUSTER_COLUMNS = [
    ("name", "NAME"),
    ("region", "REGION"),
    ("kubernetes_version", "VERSION"),
    ("phase", "PHASE"),
    ("node_counts.ready", "READY"),
    ("node_counts.observed", "NODES"),
    ("node_counts.desired", "DESIRED"),
    ("created_at", "CREATED"),
]


NODE_POOL_COLUMNS = [
    ("name", "POOL"),
    ("flavor", "FLAVOR"),
    ("count", "COUNT"),
    ("kubernetes_version", "VERSION"),
    ("labels", "LABELS"),
    ("taints", "TAINTS"),
]


def parse_pool(text: str) -> dict[str, Any]:
    """``NAME:FLAVOR:COUNT`` → a node pool body."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise typer.BadParameter(f"{text!r}: expected NAME:FLAVOR:COUNT, e.g. workers:m1.small:2")
    return {"name": parts[0], "flavor": parts[1], "count": int(parts[2])}


def parse_window(text: str) -> dict[str, Any] | None:
    """``DAY HH:MM MINUTES TIME_ZONE`` (``sun 02:00 240 Asia/Tokyo``) → a maintenance window; ``none`` → None.
    The server checks the values (day, time, duration 60..1440, an IANA zone) and says what is wrong."""
    if text.strip().lower() == "none":
        return None
    parts = text.split()
    if len(parts) != 4 or not parts[2].isdigit():
        raise typer.BadParameter(
            f"{text!r}: expected 'DAY HH:MM MINUTES TIME_ZONE', e.g. 'sun 02:00 240 Asia/Tokyo', or 'none'",
            param_hint="--maintenance-window",
        )
    day, start, minutes, zone = parts
    return {"day": day.lower(), "start": start, "duration_minutes": int(minutes), "time_zone": zone}


def format_window(window: dict[str, Any] | None) -> str | None:
    if not window:
        return None
    return f"{window['day']} {window['start']} for {window['duration_minutes']} min ({window['time_zone']})"


def format_next_window(times: dict[str, Any] | None) -> str | None:
    if not times:
        return None
    return f"{show(times.get('start'), key='start_at')} to {show(times.get('end'), key='end_at')}"


def print_cluster(cluster: dict[str, Any]) -> None:
    """A cluster for people: the summary, then its node pools and conditions as small tables."""
    counts = cluster.get("node_counts") or {}
    summary = {
        "name": cluster.get("name"),
        "id": cluster.get("id"),
        "project": cluster.get("project"),
        "region": cluster.get("region"),
        "version": cluster.get("kubernetes_version"),
        "phase": cluster.get("phase"),
        "nodes": f"{counts.get('ready', 0)} ready, {counts.get('observed', 0)}"
        f" of {counts.get('desired', 0)} built",
        "control plane": "{count} x {flavor}".format(
            **(cluster.get("control_plane") or {"count": "?", "flavor": "?"})
        ),
        "api endpoint": cluster.get("api_endpoint"),
        "maintenance window": format_window(cluster.get("maintenance_window")),
        "next window": format_next_window(cluster.get("next_maintenance_window")),
        "pending upgrade": cluster.get("pending_upgrade"),
        "created": show(cluster.get("created_at"), key="created_at"),
    }
    print_object(summary, OutputFormat.TABLE)
    pools = cluster.get("node_pools") or []
    if pools:
        print_rows(
            pools,
            NODE_POOL_COLUMNS,
            OutputFormat.TABLE,
        )
    conditions = cluster.get("conditions") or []
    if conditions:
        print_rows(
            conditions,
            [("type", "CONDITION"), ("status", "STATUS"), ("reason", "REASON"), ("message", "MESSAGE")],
            OutputFormat.TABLE,
        )


@app.command()
def create(
    name: str,
    project: ProjectOption = None,
    region: Annotated[str | None, typer.Option(help="region (default: from config)")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Kubernetes version (default: region's)")
    ] = None,
    control_plane: Annotated[int, typer.Option(help="control-plane nodes: 1 or 3")] = 1,
    control_plane_flavor: Annotated[str, typer.Option(help="control-plane flavor")] = "m1.small",
    pool: Annotated[
        list[str] | None, typer.Option("--pool", help="node pool NAME:FLAVOR:COUNT (repeatable)")
    ] = None,
    node_cidr: Annotated[str | None, typer.Option(help="node subnet CIDR")] = None,
    pod_cidr: Annotated[str | None, typer.Option(help="pod CIDR")] = None,
    service_cidr: Annotated[str | None, typer.Option(help="service CIDR")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the operation until the cluster runs")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a cluster. Answers at once; --wait follows the operation with live progress."""
    pools = [parse_pool(p) for p in (pool or ["workers:m1.small:2"])]
    with api_client() as (client, config):
        project_name = resolve_project(config, project)
        body: dict[str, Any] = {
            "name": name,
            "region": region or config.region,
            "control_plane": {"count": control_plane, "flavor": control_plane_flavor},
            "node_pools": pools,
        }
        optional = {
            "kubernetes_version": version,
            "node_cidr": node_cidr,
            "pod_cidr": pod_cidr,
            "service_cidr": service_cidr,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        created = client.post(f"/v1/projects/{project_name}/clusters", body)
        if output is OutputFormat.TABLE:
            err_console.print(f"cluster [bold]{name}[/] accepted, operation {created['operation']['id']}")
        if wait:
            follow_operation(client, created["operation"], timeout=timeout, fmt=output)
            created["cluster"] = client.get(f"/v1/projects/{project_name}/clusters/{name}")
        if output is OutputFormat.TABLE:
            print_cluster(created["cluster"])
        else:
            print_data(created, output)


@app.command("list")
def list_clusters(project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the project's clusters."""
    with api_client() as (client, config):
        clusters = client.get(f"/v1/projects/{resolve_project(config, project)}/clusters")
        print_rows(items(clusters), CLUSTER_COLUMNS, output)


@app.command()
def get(name: str, project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show one cluster with its conditions."""
    with api_client() as (client, config):
        cluster = client.get(f"/v1/projects/{resolve_project(config, project)}/clusters/{name}")
        if output is OutputFormat.TABLE:
            print_cluster(cluster)
        else:
            print_data(cluster, output)


@app.command()
def scale(
    name: str,
    pool_name: Annotated[str, typer.Argument(help="node pool")],
    count: Annotated[int, typer.Argument(help="new node count")],
    project: ProjectOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a node pool's size."""
    with api_client() as (client, config):
        project_name = resolve_project(config, project)
        result = client.patch(
            f"/v1/projects/{project_name}/clusters/{name}/node-pools/{pool_name}", {"count": count}
        )
        operation = result.get("operation") if isinstance(result, dict) else None
        if wait and operation:
            follow_operation(client, operation, timeout=timeout, fmt=output)
        if output is OutputFormat.TABLE:
            console.print(f"node pool {pool_name} → {count}")
        else:
            print_data(result, output)


@app.command()
def upgrade(
    name: str,
    version: Annotated[str, typer.Argument(help="the Kubernetes version (see `kaas region get`)")],
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
    """Upgrade the control plane and every node pool: nodes are replaced one by one, each drained first.

    A failure (a node not Ready in time, a drain blocked) pauses the upgrade: `kaas operation resume`,
    `rollback` or `cancel` it."""
    body: dict[str, Any] = {"kubernetes_version": version}
    strategy = upgrade_strategy(
        max_surge=max_surge,
        max_unavailable=max_unavailable,
        drain_timeout=drain_timeout,
        node_ready_timeout=node_ready_timeout,
    )
    if strategy is not None:
        body["upgrade_strategy"] = strategy
    with api_client() as (client, config):
        path = f"/v1/projects/{resolve_project(config, project)}/clusters/{name}"
        result = client.patch(path, body)
        if output is OutputFormat.TABLE:
            err_console.print(
                f"upgrade of [bold]{name}[/] to {version} accepted, operation {result['operation']['id']}"
            )
        if wait:
            result["operation"] = follow_operation(client, result["operation"], timeout=timeout, fmt=output)
            result["cluster"] = client.get(path)
        if output is OutputFormat.TABLE:
            print_cluster(result["cluster"])
        else:
            print_data(result, output)


@app.command()
def update(
    name: str,
    maintenance_window: Annotated[
        str,
        typer.Option(
            "--maintenance-window",
            help="weekly window for automatic patch upgrades: 'DAY HH:MM MINUTES TIME_ZONE', "
            "e.g. 'sun 02:00 240 Asia/Tokyo'; 'none' removes it",
        ),
    ],
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a cluster's settings that need no rollout (the maintenance window)."""
    body = {"maintenance_window": parse_window(maintenance_window)}
    with api_client() as (client, config):
        result = client.patch(f"/v1/projects/{resolve_project(config, project)}/clusters/{name}", body)
        if output is OutputFormat.TABLE:
            print_cluster(result["cluster"])
        else:
            print_data(result, output)


@app.command()
def delete(
    name: str,
    project: ProjectOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the deletion until every resource is gone")
    ] = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a cluster and every cloud resource it has."""
    with api_client() as (client, config):
        result = client.delete(f"/v1/projects/{resolve_project(config, project)}/clusters/{name}")
        if output is OutputFormat.TABLE:
            err_console.print(f"deletion of [bold]{name}[/] accepted, operation {result['operation']['id']}")
        if wait:
            result["operation"] = follow_operation(client, result["operation"], timeout=timeout, fmt=output)
        if output is not OutputFormat.TABLE:
            print_data(result, output)
        elif wait:
            console.print(f"cluster {name} deleted")


NODE_COLUMNS = [
    ("name", "NAME"),
    ("role", "ROLE"),
    ("node_pool", "POOL"),
    ("flavor", "FLAVOR"),
    ("status", "STATUS"),
    ("ready", "READY"),
    ("address", "ADDRESS"),
    ("created_at", "CREATED"),
]


@app.command()
def nodes(name: str, project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """The cluster's nodes (servers): role, pool, flavor, status, readiness and address."""
    with api_client() as (client, config):
        found = client.get(f"/v1/projects/{resolve_project(config, project)}/clusters/{name}/nodes")
        print_rows(items(found), NODE_COLUMNS, output)


@app.command(hidden=True)
def operations(name: str, project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """The cluster's operations, newest first (the same as `kaas operation list NAME`)."""
    with api_client() as (client, config):
        ops = client.get(f"/v1/projects/{resolve_project(config, project)}/clusters/{name}/operations")
        print_rows(items(ops), OPERATION_COLUMNS, output)
