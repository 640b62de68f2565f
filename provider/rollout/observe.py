"""What the day-2 rollout reads from a user cluster: its nodes, the work on each, and the pods no node takes.

Called by the day-2 part of a pass (``provider.rollout``) with the ``CoreV1Api`` of a ``TunnelKubeClient``
(``core()``: through the tunnel, as kaas:system); ``provider.rollout.drain`` shares its pod classification
and its error. An observation costs two LISTs whatever the cluster's size, nodes and the pods of every
namespace that have not terminated (a field selector; pages of ``PAGE_SIZE``), read as raw JSON (the
generated models would cost more CPU than the requests). It decides nothing: frozen dataclasses out.

Errors leave as ``ClusterAccessError``: temporary for what a later pass may not meet (the agent not
connected: the tunnel answers 503; 5xx, 408, 409, 429, timeouts, a connection refused), permanent for
what the cluster refuses (400, 401, 403, 404, 422).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity as _untyped_parse_quantity

_parse_quantity: Any = _untyped_parse_quantity
PAGE_SIZE = 500
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# pods still holding (or about to hold) a node's resources; Succeeded and Failed ones hold nothing
NOT_TERMINATED = "status.phase!=Succeeded,status.phase!=Failed"
TEMPORARY_STATUSES = frozenset({0, 408, 409, 429})


class ClusterAccessError(Exception):
    """A request to the cluster that did not succeed; ``temporary`` when a later pass may succeed."""

    def __init__(self, message: str, *, temporary: bool, status: int = 0) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.status = status


def is_temporary_status(status: int) -> bool:
    """0 is no answer at all (a timeout, a connection refused)."""
    return status in TEMPORARY_STATUSES or status >= 500


def status_message(exc: ApiException) -> str:
    """The apiserver's own message (a ``Status`` body) or the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or "")


class translated_errors:
    """Re-raise the client's and urllib3's errors as ``ClusterAccessError``, saying what was being done."""

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, ClusterAccessError):
            return
        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            raise ClusterAccessError(
                f"{self._action}: the cluster answered {status}: {status_message(exc)}"[:2000],
                temporary=is_temporary_status(status),
                status=status,
            ) from exc
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            raise ClusterAccessError(
                f"{self._action}: cannot reach the cluster's tunnel: {exc}"[:2000], temporary=True
            ) from exc


def read_json(response: Any) -> dict[str, Any]:
    """The body of a ``_preload_content=False`` answer, its connection handed back to the pool."""
    try:
        document: dict[str, Any] = json.loads(response.data)
    finally:
        response.release_conn()
    return document


def discard(response: Any) -> None:
    """A ``_preload_content=False`` answer whose body no one needs: read to its end before the connection
    goes back to the pool (an unread body would be the next request's status line)."""
    try:
        response.drain_conn()
    finally:
        response.release_conn()


def list_all(list_call: Any, **query: Any) -> Iterator[dict[str, Any]]:
    """Every item of a LIST, page by page (``limit``/``continue``: one consistent snapshot)."""
    token: str | None = None
    while True:
        page = read_json(list_call(limit=PAGE_SIZE, _continue=token, _preload_content=False, **query))
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return


# --- pods: what they are ---


@dataclass(frozen=True, order=True)
class PodRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_ref(pod: dict[str, Any]) -> PodRef:
    meta = pod.get("metadata") or {}
    return PodRef(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")))


def is_daemonset_pod(pod: dict[str, Any]) -> bool:
    """Owned (as its controller) by a DaemonSet: it belongs to its node, and would come back on it."""
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == "DaemonSet" and o.get("controller") for o in owners)


def is_mirror_pod(pod: dict[str, Any]) -> bool:
    """The apiserver's copy of a kubelet's static pod: evicting it deletes only the copy."""
    return MIRROR_POD_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_node_bound(pod: dict[str, Any]) -> bool:
    """A pod of its node, not of the cluster's workload: a drain leaves it, an empty node may have it."""
    return is_daemonset_pod(pod) or is_mirror_pod(pod)


def _quantity(value: Any) -> Decimal:
    try:
        return Decimal(_parse_quantity(value))
    except ValueError:
        return Decimal(0)  # the apiserver validated it; a form this parser lacks requests nothing here


def _requests(container: dict[str, Any]) -> tuple[Decimal, Decimal]:
    requests = (container.get("resources") or {}).get("requests") or {}
    return _quantity(requests.get("cpu", 0)), _quantity(requests.get("memory", 0))


def pod_requests(pod: dict[str, Any]) -> tuple[int, int]:
    """(cpu millicores, memory bytes) the scheduler reserves for a pod: the containers' requests summed
    (sidecars, init containers that keep running, with them), or the largest other init container's if
    larger, plus the pod's overhead."""
    spec = pod.get("spec") or {}
    cpu = memory = Decimal(0)
    for container in [
        *(spec.get("containers") or []),
        *(c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"),
    ]:
        c_cpu, c_memory = _requests(container)
        cpu, memory = cpu + c_cpu, memory + c_memory
    for container in spec.get("initContainers") or []:
        if container.get("restartPolicy") != "Always":
            i_cpu, i_memory = _requests(container)
            cpu, memory = max(cpu, i_cpu), max(memory, i_memory)
    overhead = spec.get("overhead") or {}
    cpu += _quantity(overhead.get("cpu", 0))
    memory += _quantity(overhead.get("memory", 0))
    return int((cpu * 1000).to_integral_value(rounding="ROUND_CEILING")), int(
        memory.to_integral_value(rounding="ROUND_CEILING")
    )


# --- the observation ---


@dataclass(frozen=True)
class NodeObservation:
    name: str
    ready: bool
    # when the Ready condition last changed (its lastTransitionTime); None when the node has none yet
    ready_since: datetime | None
    kubelet_version: str
    unschedulable: bool
    # pods bound to the node that have not terminated (terminating ones included), DaemonSets' and
    # mirror pods left out: what a drain must move and what keeps a node from being empty
    workload_pods: int


@dataclass(frozen=True)
class UnschedulablePod:
    """A pod pending because the scheduler found no node for it (PodScheduled False, Unschedulable)."""

    pod: PodRef
    cpu_millicores: int
    memory_bytes: int
    message: str  # the scheduler's reason, e.g. "0/3 nodes are available: 3 Insufficient cpu."
    node_selector: tuple[tuple[str, str], ...] = ()  # the pod's nodeSelector: which pools may take it


@dataclass(frozen=True)
class ClusterObservation:
    nodes: tuple[NodeObservation, ...]
    unschedulable_pods: tuple[UnschedulablePod, ...]

    def node(self, name: str) -> NodeObservation | None:
        return next((n for n in self.nodes if n.name == name), None)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def unschedulable_pod(pod: dict[str, Any]) -> UnschedulablePod | None:
    """The pod as an ``UnschedulablePod`` when it is one, else None."""
    if (pod.get("status") or {}).get("phase") != "Pending" or (pod.get("spec") or {}).get("nodeName"):
        return None
    scheduled = _condition(pod, "PodScheduled")
    if scheduled is None or scheduled.get("status") != "False" or scheduled.get("reason") != "Unschedulable":
        return None
    cpu, memory = pod_requests(pod)
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    return UnschedulablePod(
        pod=pod_ref(pod),
        cpu_millicores=cpu,
        memory_bytes=memory,
        message=str(scheduled.get("message") or ""),
        node_selector=tuple(sorted((str(k), str(v)) for k, v in selector.items())),
    )


def observation_from(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> ClusterObservation:
    """The observation of listed Nodes and listed not-terminated pods (pure)."""
    workload: dict[str, int] = {}
    pending: list[UnschedulablePod] = []
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            if not is_node_bound(pod):
                workload[node_name] = workload.get(node_name, 0) + 1
        elif (unschedulable := unschedulable_pod(pod)) is not None:
            pending.append(unschedulable)
    observed = []
    for node in nodes:
        name = str(node["metadata"]["name"])
        ready = _condition(node, "Ready")
        observed.append(
            NodeObservation(
                name=name,
                ready=ready is not None and ready.get("status") == "True",
                ready_since=_time(ready.get("lastTransitionTime")) if ready else None,
                kubelet_version=str(
                    ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
                ),
                unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
                workload_pods=workload.get(name, 0),
            )
        )
    return ClusterObservation(
        nodes=tuple(sorted(observed, key=lambda n: n.name)),
        unschedulable_pods=tuple(sorted(pending, key=lambda p: p.pod)),
    )


def observe_cluster(core_api: Any) -> ClusterObservation:
    """Nodes and pods of the whole cluster, two LISTs (paged)."""
    with translated_errors("list the cluster's nodes"):
        nodes = list(list_all(core_api.list_node))
    with translated_errors("list the cluster's pods"):
        pods = list(list_all(core_api.list_pod_for_all_namespaces, field_selector=NOT_TERMINATED))
    return observation_from(nodes, pods)
