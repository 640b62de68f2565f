"""Regions: admins create and change them, everyone reads them, deleting needs no live clusters."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, Region, utcnow
from tests.kaas_api.conftest import World


def test_create_fills_defaults_and_names_the_queue(world: World) -> None:
    response = world.call(
        "admin", "POST", "/v1/regions", {"name": "r2", "cloud": "os-real", "kubernetes_versions": ["1.31.0"]}
    )
    assert response.status_code == 201, response.text
    region = response.json()
    assert region["queue"] == "region.r2"
    assert region["default_kubernetes_version"] == "1.31.0"
    assert region["default_pod_cidr"] == "10.244.0.0/16"
    assert world.call("viewer", "GET", "/v1/regions/r2").json() == region


def test_patch_changes_only_the_given_fields_and_rechecks_consistency(world: World) -> None:
    response = world.call("admin", "PATCH", "/v1/regions/r1", {"dns_nameservers": ["9.9.9.9"]})
    assert response.status_code == 200
    assert response.json()["dns_nameservers"] == ["9.9.9.9"]
    assert response.json()["kubernetes_versions"] == ["1.30.2", "1.29.6"]
    response = world.call("admin", "PATCH", "/v1/regions/r1", {"kubernetes_versions": ["1.31.0"]})
    assert response.status_code == 422
    assert "default_kubernetes_version '1.30.2' is not in kubernetes_versions" in response.json()["message"]


def test_region_whose_clusters_are_all_deleted_can_be_deleted(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        cluster.phase, cluster.deleted_at = "deleted", utcnow()
        session.commit()
    assert world.call("admin", "DELETE", "/v1/regions/r1").status_code == 204
    assert world.call("viewer", "GET", "/v1/regions/r1").status_code == 404
    with session_factory() as session:
        assert session.scalars(select(Cluster)).all() == []


def test_duplicate_region_is_409(world: World) -> None:
    assert world.call("admin", "POST", "/v1/regions", {"name": "r1", "cloud": "x"}).status_code == 409


def test_every_user_reads_the_capacity_the_region_sweep_observed(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    assert world.call("viewer", "GET", "/v1/regions/r1").json()["capacity"] is None  # not observed yet
    observed = {
        "cores_limit": 40,
        "cores_used": 12,
        "ram_mb_limit": None,
        "ram_mb_used": 2048,
        "instances_limit": 10,
        "instances_used": 3,
    }
    with session_factory() as session, session.begin():  # what provider.reconciler.sweep writes
        region = session.scalars(select(Region).where(Region.name == "r1")).one()
        region.cloud_capacity, region.cloud_capacity_at = observed, utcnow()
    shown = world.call("outsider", "GET", "/v1/regions/r1").json()
    assert shown["capacity"] == observed
    assert shown["capacity_observed_at"] is not None


MIRROR_KEY = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGMHXwMBEADCbq1Cl7cp\n=AbCd\n"
    "-----END PGP PUBLIC KEY BLOCK-----\n"
)


def test_a_region_maps_versions_to_images_or_names_a_package_mirror(world: World) -> None:
    response = world.call("admin", "PATCH", "/v1/regions/r1", {"node_images": {"1.30.2": "kaas-node-1.30.2"}})
    assert response.status_code == 200, response.text
    assert response.json()["node_binaries"] == "image"
    assert response.json()["node_images"] == {"1.30.2": "kaas-node-1.30.2"}
    mirror = {
        "node_binaries": "mirror",
        "package_mirror_url": "https://mirror.example.internal/kubernetes/core:/stable:/v1.30/deb",
        "package_mirror_key": MIRROR_KEY,
    }
    response = world.call("admin", "PATCH", "/v1/regions/r1", mirror)
    assert response.status_code == 200, response.text
    assert (
        world.call("viewer", "GET", "/v1/regions/r1").json()["package_mirror_url"]
        == mirror["package_mirror_url"]
    )


def test_node_images_of_versions_the_region_does_not_offer_are_refused(world: World) -> None:
    response = world.call("admin", "PATCH", "/v1/regions/r1", {"node_images": {"1.99.0": "x"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "not_in_list"


def test_a_mirror_region_needs_url_and_key(world: World) -> None:
    response = world.call("admin", "PATCH", "/v1/regions/r1", {"node_binaries": "mirror"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "required_with"


def test_a_mirror_url_that_could_change_an_apt_line_is_refused(world: World) -> None:
    for url in ("https://m.example.com/deb [trusted=yes]", "https://m.example.com/deb\ndeb http://x/ /"):
        response = world.call("admin", "PATCH", "/v1/regions/r1", {"package_mirror_url": url})
        assert response.status_code == 422, url
    response = world.call(
        "admin", "PATCH", "/v1/regions/r1", {"package_mirror_key": "-----BEGIN PGP PRIVATE"}
    )
    assert response.status_code == 422
