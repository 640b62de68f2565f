"""``kaas region list|get``: where clusters can run, with the Kubernetes versions and flavors each region
offers and the capacity its cloud last reported (``capacity``: the cloud's compute limits and use, observed
by the region's periodic sweep; absent until first observed)."""

from __future__ import annotations

from typing import Any

import typer

from kaas_cli.commands.common import OutputOption, api_client, items
from kaas_cli.output import OutputFormat, console, print_data, print_object, print_rows, show

app = typer.Typer(help="Regions: Kubernetes versions, flavors, capacity.", no_args_is_help=True)

REGION_COLUMNS = [
    ("name", "NAME"),
    ("default_kubernetes_version", "DEFAULT VERSION"),
    ("versions", "VERSIONS"),
    ("flavors", "FLAVORS"),
    ("capacity", "CAPACITY (CORES, RAM MB, SERVERS)"),
]


def _used_of(capacity: dict[str, Any] | None, what: str) -> str:
    if not capacity:
        return "-"
    limit = capacity.get(f"{what}_limit")
    return f"{capacity.get(f'{what}_used', 0)}/{'unlimited' if limit is None else limit}"


def capacity_summary(region: dict[str, Any]) -> str:
    """``12/40 cores, 24576/65536 RAM MB, 6/10 servers`` or ``-`` when the cloud was never asked."""
    capacity = region.get("capacity")
    if not capacity:
        return "-"
    return ", ".join(
        f"{_used_of(capacity, what)} {unit}"
        for what, unit in (("cores", "cores"), ("ram_mb", "RAM MB"), ("instances", "servers"))
    )


def _summary_row(region: dict[str, Any]) -> dict[str, Any]:
    return {
        **region,
        "versions": ", ".join(region.get("kubernetes_versions") or []),
        "flavors": ", ".join(f["name"] for f in region.get("flavors") or []),
        "capacity": capacity_summary(region),
    }


@app.command("list")
def list_regions(output: OutputOption = OutputFormat.TABLE) -> None:
    """Every region, with its versions, flavors and capacity."""
    with api_client() as (client, _config):
        regions = items(client.get("/v1/regions"))
        if output is OutputFormat.TABLE:
            print_rows([_summary_row(r) for r in regions], REGION_COLUMNS, output)
        else:
            print_rows(regions, REGION_COLUMNS, output)


@app.command()
def get(name: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """One region: its settings, then its flavors and its cloud's capacity."""
    with api_client() as (client, _config):
        region = client.get(f"/v1/regions/{name}")
    if output is not OutputFormat.TABLE:
        print_data(region, output)
        return
    summary = {
        key: value
        for key, value in region.items()
        if key not in ("flavors", "capacity", "capacity_observed_at", "package_mirror_key")
    }
    images = region.get("node_images") or {}
    summary["node_images"] = ", ".join(f"{version}={image}" for version, image in images.items()) or None
    summary["kubernetes_versions"] = ", ".join(region.get("kubernetes_versions") or [])
    summary["dns_nameservers"] = ", ".join(region.get("dns_nameservers") or []) or None
    print_object(summary, output)
    print_rows(
        region.get("flavors") or [], [("name", "FLAVOR"), ("vcpus", "VCPUS"), ("ram_mb", "RAM MB")], output
    )
    capacity = region.get("capacity")
    if capacity:
        print_rows(
            [
                {
                    "resource": unit,
                    "used": capacity.get(f"{what}_used"),
                    "limit": capacity.get(f"{what}_limit"),
                }
                for what, unit in (("cores", "cores"), ("ram_mb", "RAM MB"), ("instances", "servers"))
            ],
            [("resource", "CAPACITY"), ("used", "USED"), ("limit", "LIMIT")],
            output,
        )
        observed = show(region.get("capacity_observed_at"), key="capacity_observed_at")
        console.print(f"capacity observed at {observed} (a limit of - is unlimited)", highlight=False)
    else:
        console.print("capacity: not observed yet (the region's sweep asks its cloud)", highlight=False)
