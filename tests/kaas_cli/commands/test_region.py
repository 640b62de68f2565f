"""``kaas region list|get``: versions, flavors and the capacity the region's cloud reported."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Region
from tests.kaas_api.conftest import World
from tests.kaas_cli.commands.conftest import Cli, fields, rows

CAPACITY = {
    "cores_limit": 40,
    "cores_used": 12,
    "ram_mb_limit": None,
    "ram_mb_used": 24576,
    "instances_limit": 10,
    "instances_used": 6,
}
OBSERVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture
def observed(world: World, session_factory: sessionmaker[Session]) -> None:
    """r1 as the sweep leaves it once it has asked the cloud (after the world made it)."""
    with session_factory() as session, session.begin():  # what the region's sweep writes
        region = session.scalars(select(Region).where(Region.name == "r1")).one()
        region.cloud_capacity, region.cloud_capacity_at = CAPACITY, OBSERVED


@pytest.mark.usefixtures("observed")
def test_list_shows_versions_flavors_and_capacity(cli: Cli) -> None:
    regions = cli.data("region", "list")
    assert [r["name"] for r in regions] == ["r1", "spare"]
    r1, spare = regions
    assert r1["kubernetes_versions"] == ["1.30.2", "1.29.6"]
    assert [f["name"] for f in r1["flavors"]] == ["small", "large"]
    assert (r1["capacity"], r1["capacity_observed_at"]) == (CAPACITY, "2026-01-02T03:04:05.678000Z")
    assert (spare["capacity"], spare["capacity_observed_at"]) == (None, None)
    table = cli.shown("table", "region", "list")
    assert rows(table) == [
        ["NAME", "DEFAULT VERSION", "VERSIONS", "FLAVORS", "CAPACITY (CORES, RAM MB, SERVERS)"],
        [
            "r1",
            "1.30.2",
            "1.30.2, 1.29.6",
            "small, large",
            "12/40 cores, 24576/unlimited RAM MB, 6/10 servers",
        ],
        ["spare", "-", "", "", "-"],
    ]


@pytest.mark.usefixtures("observed")
def test_get_shows_the_region_its_flavors_and_capacity(cli: Cli) -> None:
    region = cli.data("region", "get", "r1")
    assert region["default_kubernetes_version"] == "1.30.2"
    assert region["flavors"] == [
        {"name": "small", "vcpus": 2, "ram_mb": 4096},
        {"name": "large", "vcpus": 8, "ram_mb": 16384},
    ]
    assert region["capacity"] == CAPACITY
    table = cli.shown("table", "region", "get", "r1")
    assert fields(table)["kubernetes_versions"] == "1.30.2, 1.29.6"
    assert ["small", "2", "4096"] in rows(table)
    assert ["large", "8", "16384"] in rows(table)
    assert ["RAM MB", "24576", "-"] in rows(table)
    assert ["servers", "6", "10"] in rows(table)
    assert "capacity observed at 2026-01-02T03:04:05Z" in table


def test_get_of_a_region_never_observed_says_so(cli: Cli) -> None:
    table = cli.shown("table", "region", "get", "spare")
    assert "capacity: not observed yet" in table
    assert cli.data("region", "get", "spare")["capacity"] is None
