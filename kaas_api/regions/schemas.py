"""Request and response bodies of regions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from kaas_api.schemas import Timestamp
from kaas_api.validation import (
    JSON_INTEGER,
    PRINTABLE_PATTERN,
    SHORT_TEXT_MAX,
    VERSION_MAX,
    VERSION_PATTERN,
    Cidr,
    DnsLabel,
    FlavorName,
    IpAddress,
    NonEmptyText,
    Version,
    anchored,
    string_schema,
)
from kaas_core.package_mirror import MIRROR_KEY_MAX, MIRROR_KEY_PATTERN, MIRROR_URL_MAX, MIRROR_URL_PATTERN

MAX_NODE_IMAGES = 50
# pydantic states a dict's key type as patternProperties, which leaves any other key (and its value) free in
# JSON Schema; the API refuses those, so the document says every key is a version and every value an image
NodeImages = Annotated[
    dict[Version, NonEmptyText],
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_NODE_IMAGES,
            "propertyNames": {"pattern": anchored(VERSION_PATTERN), "minLength": 1, "maxLength": VERSION_MAX},
            "additionalProperties": string_schema(
                pattern=PRINTABLE_PATTERN, min_length=1, max_length=SHORT_TEXT_MAX
            ),
        }
    ),
]

NodeBinariesSource = Literal["image", "mirror"]
MirrorUrl = Annotated[str, Field(max_length=MIRROR_URL_MAX, pattern=MIRROR_URL_PATTERN)]
MirrorKey = Annotated[str, Field(max_length=MIRROR_KEY_MAX, pattern=MIRROR_KEY_PATTERN)]


class Flavor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: FlavorName
    vcpus: Annotated[int, Field(ge=1, le=4096), JSON_INTEGER]
    ram_mb: Annotated[int, Field(ge=1, le=100_000_000), JSON_INTEGER]


_EXAMPLE: dict[str, Any] = {
    "name": "region-one",
    "cloud": "os-real-demo",
    "kubernetes_versions": ["1.30.2", "1.29.6"],
    "default_kubernetes_version": "1.30.2",
    "flavors": [
        {"name": "m1.small", "vcpus": 2, "ram_mb": 4096},
        {"name": "m1.large", "vcpus": 8, "ram_mb": 16384},
    ],
    "image": "ubuntu-22.04",
    "external_network": "public",
    "default_node_cidr": "10.0.0.0/24",
    "default_pod_cidr": "10.244.0.0/16",
    "default_service_cidr": "10.96.0.0/12",
    "dns_nameservers": ["1.1.1.1"],
}


class RegionFields(BaseModel):
    """Everything about a region but its name; each field optional so PATCH can reuse it."""

    model_config = ConfigDict(extra="forbid")

    cloud: NonEmptyText | None = Field(default=None, description="The clouds.yaml entry.")
    kubernetes_versions: list[Version] | None = Field(default=None, max_length=50)
    default_kubernetes_version: Version | None = None
    flavors: list[Flavor] | None = Field(default=None, max_length=200)
    image: NonEmptyText | None = None
    external_network: NonEmptyText | None = None
    default_node_cidr: Cidr | None = None
    default_pod_cidr: Cidr | None = None
    default_service_cidr: Cidr | None = None
    dns_nameservers: list[IpAddress] | None = Field(default=None, max_length=10)
    node_binaries: NodeBinariesSource | None = Field(
        default=None,
        description="How nodes get containerd, kubelet and kubeadm: 'image' (node_images maps each version to"
        " an image with them preinstalled; image is the fallback) or 'mirror' (installed at first boot on"
        " image from package_mirror_url, signed by package_mirror_key).",
    )
    node_images: NodeImages | None = Field(default=None, max_length=MAX_NODE_IMAGES)
    package_mirror_url: MirrorUrl | None = Field(
        default=None, description="A Debian repository laid out as the Kubernetes project's (deb <url> /)."
    )
    package_mirror_key: MirrorKey | None = Field(
        default=None, description="The mirror's ASCII-armoured OpenPGP public key."
    )


class RegionCreate(RegionFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    name: DnsLabel
    cloud: NonEmptyText = Field(description="The clouds.yaml entry.")


class RegionPatch(RegionFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kubernetes_versions": ["1.31.0", "1.30.2"], "default_kubernetes_version": "1.31.0"}
            ]
        },
    )


class RegionCapacity(BaseModel):
    """What the region's cloud last said of its compute limits and use (``provider.cloud.driver.
    CloudCapacity``, observed by the region's sweep); a null limit is unlimited."""

    cores_limit: int | None
    cores_used: int
    ram_mb_limit: int | None
    ram_mb_used: int
    instances_limit: int | None
    instances_used: int


class RegionOut(BaseModel):
    id: str
    name: str
    cloud: str
    queue: str
    kubernetes_versions: list[str]
    default_kubernetes_version: str | None
    flavors: list[Flavor]
    capacity: RegionCapacity | None = Field(description="The cloud's word; null until first observed.")
    capacity_observed_at: Timestamp | None
    image: str
    external_network: str
    default_node_cidr: str
    default_pod_cidr: str
    default_service_cidr: str
    dns_nameservers: list[str]
    node_binaries: str
    node_images: dict[str, str]
    package_mirror_url: str | None
    package_mirror_key: str | None
    created_at: Timestamp
