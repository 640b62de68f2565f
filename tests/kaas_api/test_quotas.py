"""Quotas: each of the four limits refuses the change that would exceed it and says by how much."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kaas_api.conftest import World, cluster_body

# c1 in the world uses: 1 cluster, 2 nodes (1 cp + 1 worker, both "small"), 4 vCPUs, 8192 MB
UNLIMITED = {"max_clusters": None, "max_nodes": None, "max_vcpus": None, "max_ram_mb": None}


def set_quota(world: World, **limits: Any) -> None:
    response = world.call("admin", "PUT", "/v1/projects/alpha/quota", {**UNLIMITED, **limits})
    assert response.status_code == 200, response.text


def test_quota_reports_usage(world: World) -> None:
    body = world.call("viewer", "GET", "/v1/projects/alpha/quota").json()
    assert body["usage"] == {"clusters": 1, "nodes": 2, "vcpus": 4, "ram_mb": 8192}


SMALL_WORKERS_3 = [{"name": "w", "flavor": "small", "count": 3}]  # with the cp: 4 nodes
LARGE_WORKERS_2 = [{"name": "w", "flavor": "large", "count": 2}]  # with the cp: 18 vCPUs, 36864 MB


@pytest.mark.parametrize(
    ("limits", "pools", "message", "detail"),
    [
        (
            {"max_clusters": 1},
            SMALL_WORKERS_3,
            "cluster quota exceeded: requested 1 more, 1 of 1 in use",
            {"limit": "max_clusters", "requested": 1, "in_use": 1, "max": 1},
        ),
        (
            {"max_nodes": 5},
            SMALL_WORKERS_3,
            "node quota exceeded: requested 4 more, 2 of 5 in use",
            {"limit": "max_nodes", "requested": 4, "in_use": 2, "max": 5},
        ),
        (
            {"max_vcpus": 20},
            LARGE_WORKERS_2,
            "vCPU quota exceeded: requested 18 more, 4 of 20 in use",
            {"limit": "max_vcpus", "requested": 18, "in_use": 4, "max": 20},
        ),
        (
            {"max_ram_mb": 40000},
            LARGE_WORKERS_2,
            "RAM quota exceeded: requested 36864 MB more, 8192 MB of 40000 MB in use",
            {"limit": "max_ram_mb", "requested": 36864, "in_use": 8192, "max": 40000},
        ),
    ],
)
def test_cluster_create_over_a_limit_is_refused_naming_it(
    world: World, limits: dict[str, int], pools: list[dict[str, Any]], message: str, detail: dict[str, Any]
) -> None:
    set_quota(world, **limits)
    response = world.call(
        "member", "POST", "/v1/projects/alpha/clusters", cluster_body("big", node_pools=pools)
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "quota_exceeded"
    assert response.json()["message"].startswith(message)
    assert response.json()["detail"] == detail
    assert [c["name"] for c in world.call("viewer", "GET", "/v1/projects/alpha/clusters").json()] == ["c1"]


def test_a_change_that_fits_exactly_is_accepted(world: World) -> None:
    set_quota(world, max_nodes=3, max_vcpus=6)
    response = world.call(
        "member", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 2}]}
    )
    assert response.status_code == 202, response.text


def test_scaling_up_over_the_vcpu_quota_is_refused(world: World) -> None:
    set_quota(world, max_vcpus=8)
    response = world.call(
        "member", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 4}]}
    )
    assert response.status_code == 409
    assert response.json()["message"].startswith("vCPU quota exceeded: requested 6 more, 4 of 8 in use")


def test_adding_a_node_pool_over_the_node_quota_is_refused(world: World) -> None:
    set_quota(world, max_nodes=3)
    response = world.call(
        "member",
        "POST",
        "/v1/projects/alpha/clusters/c1/node-pools",
        {"name": "w", "flavor": "small", "count": 2},
    )
    assert response.status_code == 409
    assert response.json()["detail"] == {"limit": "max_nodes", "requested": 2, "in_use": 2, "max": 3}


def test_scaling_down_is_allowed_even_over_quota(world: World) -> None:
    set_quota(world, max_nodes=0, max_vcpus=0)
    response = world.call(
        "member", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 0}]}
    )
    assert response.status_code == 202


def test_deleted_clusters_do_not_count(world: World, session_factory: Any) -> None:
    from kaas_core.db.models import Cluster, utcnow

    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        cluster.phase, cluster.deleted_at = "deleted", utcnow()
        session.commit()
    set_quota(world, max_clusters=1)
    assert world.call("member", "POST", "/v1/projects/alpha/clusters", cluster_body("c2")).status_code == 202


def test_only_admins_change_quotas(world: World) -> None:
    response = world.call("owner", "PUT", "/v1/projects/alpha/quota", UNLIMITED)
    assert response.status_code == 403


def test_usage_summed_by_the_database_matches_each_clusters_footprint(
    world: World, session_factory: Any
) -> None:
    """``project_usage`` sums in SQL; ``cluster_footprint`` (used when a cluster changes) sizes one cluster
    from its objects. Across regions, autoscaled pools (their max_count), a deleted cluster and a flavor
    the region no longer lists, both must agree."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from kaas_api.clusters.quota import Usage, cluster_footprint, project_usage
    from kaas_api.regions.service import create_region
    from kaas_core.db.models import Cluster, Project, Region, utcnow

    with session_factory() as session:
        create_region(
            session,
            name="r2",
            cloud="os-real-demo",
            kubernetes_versions=["1.30.2"],
            default_kubernetes_version="1.30.2",
            flavors=[
                {"name": "small", "vcpus": 1, "ram_mb": 1024},
                {"name": "huge", "vcpus": 32, "ram_mb": 1},
            ],
        )
        session.commit()
    set_quota(world)  # unlimited: the limits are not what is tested
    pools = [
        {"name": "a", "flavor": "large", "count": 2, "min_count": 1, "max_count": 5},
        {"name": "b", "flavor": "small", "count": 3, "min_count": 1, "max_count": 3},
        {"name": "c", "flavor": "small", "count": 0},
    ]
    for body in (
        cluster_body("c2", node_pools=pools),
        cluster_body("c3", region="r2", node_pools=[{"name": "h", "flavor": "huge", "count": 4}]),
        cluster_body("c4", region="r2", control_plane={"count": 3, "flavor": "small"}),
        cluster_body("gone", control_plane={"count": 3, "flavor": "large"}),
    ):
        response = world.call("member", "POST", "/v1/projects/alpha/clusters", body)
        assert response.status_code == 202, response.text
    with session_factory() as session:
        gone = session.scalars(select(Cluster).where(Cluster.name == "gone")).one()
        gone.phase, gone.deleted_at = "deleted", utcnow()
        r1 = session.scalars(select(Region).where(Region.name == "r1")).one()
        r1.flavors = [f for f in r1.flavors if f["name"] != "large"]  # no longer offered: counts as 0 size
        session.commit()

    with session_factory() as session:
        project = session.scalars(select(Project).where(Project.name == "alpha")).one()
        live = session.scalars(
            select(Cluster)
            .where(Cluster.project_id == project.id, Cluster.deleted_at.is_(None))
            .options(selectinload(Cluster.node_pools), selectinload(Cluster.region))
        ).all()
        assert sorted(c.name for c in live) == ["c1", "c2", "c3", "c4"]
        expected = sum((cluster_footprint(c) for c in live), Usage())
        assert project_usage(session, project.id) == expected
        # c1 2 small; c2 1 small + 5 large (unsized now) + 3 small; c3 1 small + 4 huge; c4 3 small + 1 small
        assert expected == Usage(
            clusters=4, nodes=20, vcpus=2 * 6 + 1 + 4 * 32 + 4, ram_mb=4096 * 6 + 1024 + 4 + 4096
        )
