"""Regions: the clouds clusters run in and the choices users have there. Admins manage them.

Called by ``kaas_api.regions.endpoints``, ``kaas_api.clusters.service`` (lookups) and the CLI.
Flushes only; the caller commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kaas_api.errors import Conflict, InvalidInput, NotFound
from kaas_api.validation import check_dns_label, is_dns_label, is_uuid, overlapping_cidrs
from kaas_core.db.models import Cluster, Region

_FIELDS = (
    "cloud",
    "kubernetes_versions",
    "default_kubernetes_version",
    "flavors",
    "image",
    "external_network",
    "default_node_cidr",
    "default_pod_cidr",
    "default_service_cidr",
    "dns_nameservers",
    "node_binaries",
    "node_images",
    "package_mirror_url",
    "package_mirror_key",
)


def get_region(session: Session, name: str) -> Region:
    """A region by name, or by id as the API's answers give it."""
    region = session.get(Region, name) if is_uuid(name) else None
    if region is None and is_dns_label(name):
        region = session.scalar(select(Region).where(Region.name == name))
    if region is None:
        raise NotFound(f"region {name[:80]!r} not found")
    return region


def list_regions(session: Session) -> list[Region]:
    return list(session.scalars(select(Region).order_by(Region.name)))


def _check_consistent(region: Region) -> None:
    versions = list(region.kubernetes_versions or [])
    if len(set(versions)) != len(versions):
        raise InvalidInput(
            "kubernetes_versions: list each version once", field="kubernetes_versions", rule="duplicate"
        )
    default = region.default_kubernetes_version
    if default is not None and default not in versions:
        raise InvalidInput(
            f"default_kubernetes_version {default!r} is not in kubernetes_versions {versions}",
            field="default_kubernetes_version",
            rule="not_in_list",
        )
    unknown = sorted(set(region.node_images or {}) - set(versions))
    if unknown:
        raise InvalidInput(
            f"node_images names versions the region does not offer: {unknown}",
            field="node_images",
            rule="not_in_list",
        )
    if region.node_binaries == "mirror" and not (region.package_mirror_url and region.package_mirror_key):
        raise InvalidInput(
            "a region whose nodes install from a mirror needs package_mirror_url and package_mirror_key",
            field="package_mirror_url",
            rule="required_with",
        )
    names = [f["name"] for f in region.flavors or []]
    if len(set(names)) != len(names):
        raise InvalidInput("flavors: list each flavor name once", field="flavors", rule="duplicate")
    overlaps = overlapping_cidrs(
        {
            "default_node_cidr": region.default_node_cidr,
            "default_pod_cidr": region.default_pod_cidr,
            "default_service_cidr": region.default_service_cidr,
        }
    )
    if overlaps:
        raise InvalidInput(
            "default CIDRs must not overlap: " + "; ".join(overlaps), rule="cidr_overlap", overlaps=overlaps
        )


def create_region(session: Session, *, name: str, **fields: Any) -> Region:
    """Create a region. ``fields`` are the optional columns of ``Region`` (None keeps the default)."""
    try:
        check_dns_label(name)
    except ValueError as exc:
        raise InvalidInput(f"region name: {exc}", field="name") from None
    if session.scalar(select(Region.id).where(Region.name == name)) is not None:
        raise Conflict(f"region {name!r} already exists")
    region = Region(name=name, **{k: v for k, v in fields.items() if k in _FIELDS and v is not None})
    if region.default_kubernetes_version is None and region.kubernetes_versions:
        region.default_kubernetes_version = region.kubernetes_versions[0]
    _apply_defaults(region)
    _check_consistent(region)
    session.add(region)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"region {name!r} already exists") from exc
    return region


def _apply_defaults(region: Region) -> None:
    # column defaults apply only at INSERT; validation needs them now
    for column in Region.__table__.columns:
        if getattr(region, column.key) is None and column.default is not None and column.key in _FIELDS:
            default = column.default.arg
            setattr(region, column.key, default(None) if callable(default) else default)


def update_region(session: Session, region: Region, **fields: Any) -> Region:
    """Change the given fields (None: unchanged)."""
    for key, value in fields.items():
        if key in _FIELDS and value is not None:
            setattr(region, key, value)
    _check_consistent(region)
    session.flush()
    return region


def delete_region(session: Session, region: Region) -> None:
    """Delete a region without live clusters; records of its deleted clusters go with it."""
    live = session.scalar(
        select(func.count())
        .select_from(Cluster)
        .where(Cluster.region_id == region.id, Cluster.deleted_at.is_(None))
    )
    if live:
        raise Conflict(
            f"region {region.name!r} still has {live} live cluster(s): delete them first",
            detail={"clusters": live},
        )
    session.execute(delete(Cluster).where(Cluster.region_id == region.id))
    session.delete(region)
    session.flush()


def flavor_sizes(region: Region) -> dict[str, tuple[int, int]]:
    """Flavor name -> (vcpus, ram_mb), as quotas count them."""
    return {str(f["name"]): (int(f["vcpus"]), int(f["ram_mb"])) for f in region.flavors or []}
