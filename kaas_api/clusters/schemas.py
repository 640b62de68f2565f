"""Request and response bodies of clusters, node pools and nodes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kaas_api.operations.schemas import OperationOut
from kaas_api.schemas import Timestamp
from kaas_api.validation import (
    JSON_INTEGER,
    LABEL_KEY_SCHEMA,
    LABEL_VALUE_SCHEMA,
    Cidr,
    DnsLabel,
    FlavorName,
    LabelKey,
    LabelValue,
    Version,
    anchored,
)
from kaas_core import maintenance, upgrades

MAX_POOL_COUNT = 100
MAX_POOLS = 20
PoolSize = Annotated[int, Field(ge=0, le=MAX_POOL_COUNT), JSON_INTEGER]


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: LabelKey
    value: LabelValue = ""
    effect: TaintEffect


MAX_LABELS = 50
# A node's user-data carries its pool's labels and taints twice (kaas's node.yaml and kubeadm's config) and
# Nova takes at most 64 KiB of it in base64: these bounds keep the largest worker's within that
# (tests/provider/bootstrap/test_kubeadm.py renders it). The characters of keys and values, each.
MAX_LABELS_CHARACTERS = 8192
MAX_TAINTS_CHARACTERS = 8192


def _labels_fit(labels: dict[str, str]) -> dict[str, str]:
    size = sum(len(key) + len(value) for key, value in labels.items())
    if size > MAX_LABELS_CHARACTERS:
        raise PydanticCustomError(
            "too_large",
            "the labels' keys and values take {size} characters, at most {limit} are allowed",
            {"size": size, "limit": MAX_LABELS_CHARACTERS},
        )
    return labels


def _taints_fit(taints: list[Taint]) -> list[Taint]:
    size = sum(len(t.key) + len(t.value) + len(t.effect.value) for t in taints)
    if size > MAX_TAINTS_CHARACTERS:
        raise PydanticCustomError(
            "too_large",
            "the taints' keys, values and effects take {size} characters, at most {limit} are allowed",
            {"size": size, "limit": MAX_TAINTS_CHARACTERS},
        )
    return taints


Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(max_length=MAX_LABELS),
    AfterValidator(_labels_fit),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_LABELS,
            "propertyNames": LABEL_KEY_SCHEMA,
            "additionalProperties": LABEL_VALUE_SCHEMA,
        }
    ),
]
Taints = Annotated[list[Taint], Field(max_length=50), AfterValidator(_taints_fit)]


class NodePoolCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "workers",
                    "flavor": "m1.large",
                    "count": 3,
                    "labels": {"tier": "web"},
                    "taints": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}],
                }
            ]
        },
    )

    name: DnsLabel
    flavor: FlavorName
    count: PoolSize
    labels: Labels = Field(default_factory=dict)
    taints: Taints = Field(default_factory=list)
    min_count: PoolSize | None = Field(
        default=None, description="The autoscaler's lower bound; with max_count, or neither."
    )
    max_count: PoolSize | None = Field(
        default=None, description="The autoscaler's upper bound (counted against the quota); with min_count."
    )


MAX_NODES_TO_REMOVE = MAX_POOL_COUNT


class NodePoolPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"count": 5}, {"count": 2, "nodes_to_remove": ["kaas-1a2b3c4d-p1-x7k2q"]}]
        },
    )

    count: PoolSize | None = None
    labels: Labels | None = None
    taints: Taints | None = None
    min_count: PoolSize | None = Field(default=None, description="With max_count; both null: not autoscaled.")
    max_count: PoolSize | None = Field(default=None, description="With min_count.")
    nodes_to_remove: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] | None = Field(
        default=None,
        max_length=MAX_NODES_TO_REMOVE,
        description="With a lower count: the pool's nodes to drain and remove first (at most the decrease).",
    )


class UpgradeStrategy(BaseModel):
    """How the rollout replaces nodes (``kaas_core.upgrades.UpgradeStrategy`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    max_surge: Annotated[int, Field(ge=0, le=upgrades.MAX_SURGE_LIMIT), JSON_INTEGER] = (
        upgrades.UpgradeStrategy.max_surge
    )
    max_unavailable: Annotated[int, Field(ge=0, le=upgrades.MAX_UNAVAILABLE_LIMIT), JSON_INTEGER] = (
        upgrades.UpgradeStrategy.max_unavailable
    )
    drain_timeout_seconds: Annotated[
        int, Field(ge=upgrades.MIN_TIMEOUT_SECONDS, le=upgrades.MAX_TIMEOUT_SECONDS), JSON_INTEGER
    ] = upgrades.UpgradeStrategy.drain_timeout_seconds
    node_ready_timeout_seconds: Annotated[
        int, Field(ge=upgrades.MIN_TIMEOUT_SECONDS, le=upgrades.MAX_TIMEOUT_SECONDS), JSON_INTEGER
    ] = upgrades.UpgradeStrategy.node_ready_timeout_seconds

    def strategy(self) -> upgrades.UpgradeStrategy:
        return upgrades.UpgradeStrategy(**self.model_dump())


class NodePoolUpgrade(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"kubernetes_version": "1.30.2", "upgrade_strategy": {"max_surge": 2}}]
        },
    )

    kubernetes_version: Version | None = Field(default=None, description="Default: the cluster's version.")
    upgrade_strategy: UpgradeStrategy = Field(default_factory=UpgradeStrategy)


def _known_time_zone(value: str) -> str:
    try:
        return maintenance.check_time_zone(value)
    except maintenance.MaintenanceWindowError as exc:
        raise PydanticCustomError("unknown_time_zone", str(exc)) from None


class MaintenanceWindow(BaseModel):
    """A weekly window, in the cluster's time zone, automatic patch upgrades may run in."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"day": "sun", "start": "02:00", "duration_minutes": 240, "time_zone": "Asia/Tokyo"}]
        },
    )

    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    start: Annotated[str, StringConstraints(pattern=anchored(maintenance.START_PATTERN))] = Field(
        description="24-hour local time HH:MM."
    )
    duration_minutes: Annotated[
        int,
        Field(ge=maintenance.MIN_DURATION_MINUTES, le=maintenance.MAX_DURATION_MINUTES),
        JSON_INTEGER,
    ]
    time_zone: Annotated[
        str,
        StringConstraints(min_length=1, max_length=maintenance.TIME_ZONE_MAX),
        AfterValidator(_known_time_zone),
    ] = Field(description="An IANA time zone name, e.g. 'Europe/Paris' or 'UTC'.")


class ControlPlane(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: Literal[1, 3] = 1
    flavor: FlavorName

    @field_validator("count", mode="before")
    @classmethod
    def _count_is_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or value not in (1, 3):
            raise ValueError("control plane count must be 1 or 3")
        return value


_CLUSTER_EXAMPLE: dict[str, Any] = {
    "name": "prod",
    "region": "region-one",
    "kubernetes_version": "1.30.2",
    "control_plane": {"count": 3, "flavor": "m1.small"},
    "node_pools": [{"name": "workers", "flavor": "m1.large", "count": 3, "labels": {}, "taints": []}],
    "node_cidr": "10.0.0.0/24",
    "pod_cidr": "10.244.0.0/16",
    "service_cidr": "10.96.0.0/12",
}


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CLUSTER_EXAMPLE]})

    name: DnsLabel
    region: DnsLabel
    kubernetes_version: Version | None = Field(default=None, description="Default: the region's default.")
    control_plane: ControlPlane
    node_pools: list[NodePoolCreate] = Field(default_factory=list, max_length=MAX_POOLS)
    node_cidr: Cidr | None = None
    pod_cidr: Cidr | None = None
    service_cidr: Cidr | None = None


class PoolCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DnsLabel
    count: PoolSize


class ClusterPatch(BaseModel):
    """Scale pools, or upgrade Kubernetes (not both at once), and/or set the maintenance window."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"node_pools": [{"name": "workers", "count": 5}]},
                {"kubernetes_version": "1.31.1", "upgrade_strategy": {"max_surge": 1, "max_unavailable": 0}},
                {
                    "maintenance_window": {
                        "day": "sun",
                        "start": "02:00",
                        "duration_minutes": 240,
                        "time_zone": "UTC",
                    }
                },
            ],
            "minProperties": 1,
            "dependentRequired": {"upgrade_strategy": ["kubernetes_version"]},
        },
    )

    node_pools: list[PoolCount] | None = Field(default=None, min_length=1, max_length=MAX_POOLS)
    kubernetes_version: Version | None = Field(
        default=None, description="Upgrade the control plane and every pool (a rolling replacement)."
    )
    upgrade_strategy: UpgradeStrategy | None = Field(default=None, description="With kubernetes_version.")
    maintenance_window: MaintenanceWindow | None = Field(default=None, description="null removes it.")

    @model_validator(mode="after")
    def _one_kind_of_change(self) -> ClusterPatch:
        given = self.model_fields_set
        if self.node_pools is None and self.kubernetes_version is None and "maintenance_window" not in given:
            raise PydanticCustomError(
                "nothing_to_change", "give node_pools, kubernetes_version or maintenance_window"
            )
        if "upgrade_strategy" in given and self.kubernetes_version is None:
            raise PydanticCustomError(
                "required_with", "upgrade_strategy is given only with kubernetes_version"
            )
        if self.kubernetes_version is not None and self.node_pools is not None:
            raise PydanticCustomError(
                "conflicting_changes",
                "an upgrade (kubernetes_version) cannot be combined with other changes (node_pools): "
                "send them one after the other",
            )
        return self

    @field_validator("node_pools")
    @classmethod
    def _each_pool_once(cls, value: list[PoolCount] | None) -> list[PoolCount] | None:
        if value is None:
            return None
        names = [item.name for item in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PydanticCustomError(
                "duplicate", "name each node pool once; repeated: {names}", {"names": ", ".join(repeated)}
            )
        return value


class NodePoolOut(BaseModel):
    id: str
    name: str
    flavor: str
    count: int
    labels: dict[str, str]
    taints: list[dict[str, str]]
    kubernetes_version: str = Field(description="The pool's kubelet version (the cluster's unless upgraded).")
    min_count: int | None = None
    max_count: int | None = None
    nodes_to_remove: list[str] = Field(default_factory=list)
    created_at: Timestamp


class ConditionOut(BaseModel):
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: Timestamp | None = None


class NodeCounts(BaseModel):
    desired: int = Field(description="Control plane plus every pool's count.")
    observed: int = Field(description="Servers the provider has seen.")
    ready: int = Field(description="Nodes Kubernetes reports Ready.")


class ControlPlaneOut(BaseModel):
    count: int
    flavor: str


class WindowTimes(BaseModel):
    start: Timestamp
    end: Timestamp


class ClusterOut(BaseModel):
    id: str
    name: str
    project: str
    region: str
    kubernetes_version: str
    control_plane: ControlPlaneOut
    node_pools: list[NodePoolOut]
    node_cidr: str
    pod_cidr: str
    service_cidr: str
    phase: str
    paused: bool = Field(default=False, description="an admin paused its reconciliation")
    conditions: list[ConditionOut]
    node_counts: NodeCounts
    api_endpoint: str | None
    maintenance_window: MaintenanceWindow | None = None
    next_maintenance_window: WindowTimes | None = Field(
        default=None, description="The window open now, else the next one (UTC)."
    )
    pending_upgrade: str | None = Field(
        default=None,
        description="The patch version the region upgrades this cluster to automatically in its next window.",
    )
    generation: int
    observed_generation: int
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class ClusterAccepted(BaseModel):
    cluster: ClusterOut
    operation: OperationOut | None = Field(
        description="The operation to poll; null when the change needs no work (a maintenance window)."
    )


class NodePoolAccepted(BaseModel):
    node_pool: NodePoolOut | None
    operation: OperationOut


class NodeOut(BaseModel):
    id: str
    name: str
    role: str
    node_pool: str | None
    flavor: str
    status: str
    address: str | None
    ready: bool
    created_at: Timestamp
    updated_at: Timestamp
