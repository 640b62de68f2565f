"""HTTP endpoints of ``/v1/regions``: admins write, every user reads."""

from __future__ import annotations

from fastapi import APIRouter, status

from kaas_api.deps import Admin, CurrentUser, Uow
from kaas_api.regions import service
from kaas_api.regions.schemas import Flavor, RegionCapacity, RegionCreate, RegionOut, RegionPatch
from kaas_core.db.models import Region

router = APIRouter(prefix="/v1/regions", tags=["regions"])


def region_out(region: Region) -> RegionOut:
    return RegionOut(
        id=region.id,
        name=region.name,
        cloud=region.cloud,
        queue=region.queue,
        kubernetes_versions=list(region.kubernetes_versions or []),
        default_kubernetes_version=region.default_kubernetes_version,
        flavors=[Flavor.model_validate(f) for f in region.flavors or []],
        capacity=RegionCapacity.model_validate(region.cloud_capacity) if region.cloud_capacity else None,
        capacity_observed_at=region.cloud_capacity_at,
        image=region.image,
        external_network=region.external_network,
        default_node_cidr=region.default_node_cidr,
        default_pod_cidr=region.default_pod_cidr,
        default_service_cidr=region.default_service_cidr,
        dns_nameservers=list(region.dns_nameservers or []),
        node_binaries=region.node_binaries or "image",
        node_images=dict(region.node_images or {}),
        package_mirror_url=region.package_mirror_url,
        package_mirror_key=region.package_mirror_key,
        created_at=region.created_at,
    )


def _fields(body: RegionCreate | RegionPatch) -> dict[str, object]:
    data = body.model_dump(exclude={"name"})
    if body.flavors is not None:
        data["flavors"] = [f.model_dump() for f in body.flavors]
    return data


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RegionOut)
def create_region(body: RegionCreate, admin: Admin, uow: Uow) -> RegionOut:
    return region_out(service.create_region(uow.session, name=body.name, **_fields(body)))


@router.get("", response_model=list[RegionOut])
def list_regions(principal: CurrentUser, uow: Uow) -> list[RegionOut]:
    return [region_out(r) for r in service.list_regions(uow.session)]


@router.get("/{region}", response_model=RegionOut)
def get_region(region: str, principal: CurrentUser, uow: Uow) -> RegionOut:
    return region_out(service.get_region(uow.session, region))


@router.patch("/{region}", response_model=RegionOut)
def update_region(region: str, body: RegionPatch, admin: Admin, uow: Uow) -> RegionOut:
    row = service.get_region(uow.session, region)
    return region_out(service.update_region(uow.session, row, **_fields(body)))


@router.delete("/{region}", status_code=status.HTTP_204_NO_CONTENT)
def delete_region(region: str, admin: Admin, uow: Uow) -> None:
    service.delete_region(uow.session, service.get_region(uow.session, region))
