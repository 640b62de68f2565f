"""Cordoning and draining one node of a user cluster, one bounded step per pass.

Called by the day-2 part of a pass (``provider.rollout``) with the ``CoreV1Api`` of a ``TunnelKubeClient``
(``core()``: through the tunnel, as kaas:system). Nothing here waits: a pass calls ``drain_step`` once, it
cordons the node (idempotent), lists the node's pods (one LIST, a field selector) and asks the Eviction API
(policy/v1) once for each pod still to move, then returns a ``DrainProgress``; the next pass calls it again.

- Left alone: pods owned by a DaemonSet (they belong to the node and tolerate the cordon) and mirror pods (a
  kubelet's static pods: evicting the copy moves nothing); pods that have terminated (Succeeded, Failed).
- Evicted, never deleted: the apiserver checks each eviction against the pod's PodDisruptionBudgets. A 429
  is a budget saying "not now" (or the apiserver's own flow control): the pod is ``blocked`` and stays; a
  later pass asks again. The planner's ``drain_timeout_seconds`` decides when waiting has lasted too long.
- A pod already terminating (a deletionTimestamp) is not asked again but still counts: a drain is
  ``complete`` only once no evictable pod is bound to the node at all, so the pass after the last
  evictions is the one that sees it complete, when the pods are gone.

Errors that stop the step leave as ``ClusterAccessError`` (``provider.rollout.observe``: temporary when the
tunnel or the cluster may answer later, permanent when it refuses, e.g. the node does not exist); an
eviction the cluster refuses for one pod only (a pod under two budgets answers 500, a namespace being
deleted 403) is reported in ``errors`` and the step goes on with the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes.client import V1Eviction, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from provider.rollout.observe import (
    NOT_TERMINATED,
    ClusterAccessError,
    PodRef,
    discard,
    is_node_bound,
    is_terminating,
    list_all,
    pod_ref,
    status_message,
    translated_errors,
)

MERGE_PATCH = "application/merge-patch+json"
PDB_REFUSAL = 429
# no answer from the cluster at all: the tunnel (502, 503: the agent not connected, 504) or the network;
# the rest of this step's evictions would meet the same, so the step stops
UNREACHABLE = frozenset({0, 502, 503, 504})


@dataclass(frozen=True)
class BlockedPod:
    pod: PodRef
    message: str  # the apiserver's, e.g. "Cannot evict pod as it would violate the pod's disruption budget."


@dataclass(frozen=True)
class PodEvictionError:
    pod: PodRef
    status: int
    message: str
    temporary: bool


@dataclass(frozen=True)
class DrainProgress:
    """One ``drain_step``'s result. Every evictable pod still on the node is in exactly one of evicted,
    terminating, blocked and errors."""

    node: str
    evicted: tuple[PodRef, ...]  # evictions accepted by this step (their pods now terminating)
    terminating: tuple[PodRef, ...]  # already terminating before this step: not asked again
    blocked: tuple[BlockedPod, ...]  # refused with 429: a PodDisruptionBudget says not now
    errors: tuple[PodEvictionError, ...]  # refused for another reason
    left_alone: tuple[PodRef, ...]  # DaemonSets' and mirror pods: a drain does not move them

    @property
    def remaining(self) -> tuple[PodRef, ...]:
        return tuple(
            sorted(
                (
                    *self.evicted,
                    *self.terminating,
                    *(b.pod for b in self.blocked),
                    *(e.pod for e in self.errors),
                )
            )
        )

    @property
    def complete(self) -> bool:
        """No evictable pod bound to the node any more: its server may go."""
        return not self.remaining


def _set_unschedulable(core_api: Any, node: str, *, unschedulable: bool) -> None:
    # a merge patch of one field: idempotent, and the apiserver writes nothing when it is already so
    with translated_errors(f"{'cordon' if unschedulable else 'uncordon'} node {node}"):
        discard(
            core_api.patch_node(
                node,
                {"spec": {"unschedulable": unschedulable}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )


def cordon(core_api: Any, node: str) -> None:
    """No new pod is scheduled on ``node`` (``spec.unschedulable``); already so is no error. A node that
    does not exist is a permanent ``ClusterAccessError`` with status 404."""
    _set_unschedulable(core_api, node, unschedulable=True)


def uncordon(core_api: Any, node: str) -> None:
    """The node takes new pods again (a rollout cancelled or rolled back before its server went)."""
    _set_unschedulable(core_api, node, unschedulable=False)


def _evict(core_api: Any, pod: PodRef) -> None:
    eviction = V1Eviction(
        api_version="policy/v1",
        kind="Eviction",
        metadata=V1ObjectMeta(name=pod.name, namespace=pod.namespace),
    )
    discard(
        core_api.create_namespaced_pod_eviction(pod.name, pod.namespace, eviction, _preload_content=False)
    )


def drain_step(core_api: Any, node: str) -> DrainProgress:
    """Cordon ``node`` and ask once to evict each of its evictable pods (see the module docstring)."""
    cordon(core_api, node)
    with translated_errors(f"list the pods of node {node}"):
        pods = list(
            list_all(
                core_api.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node},{NOT_TERMINATED}"
            )
        )
    evicted: list[PodRef] = []
    terminating: list[PodRef] = []
    blocked: list[BlockedPod] = []
    errors: list[PodEvictionError] = []
    left_alone: list[PodRef] = []
    for pod in pods:
        ref = pod_ref(pod)
        if is_node_bound(pod):
            left_alone.append(ref)
            continue
        if is_terminating(pod):
            terminating.append(ref)
            continue
        try:
            with translated_errors(f"evict pod {ref} from node {node}"):
                _evict(core_api, ref)
        except ClusterAccessError as exc:
            if exc.status in UNREACHABLE:
                raise
            cause = exc.__cause__
            message = status_message(cause) if isinstance(cause, ApiException) else str(exc)
            if exc.status == 404:
                continue  # gone between the list and the eviction: nothing left to move
            if exc.status == PDB_REFUSAL:
                blocked.append(BlockedPod(pod=ref, message=message))
            else:
                errors.append(
                    PodEvictionError(pod=ref, status=exc.status, message=message, temporary=exc.temporary)
                )
            continue
        evicted.append(ref)
    return DrainProgress(
        node=node,
        evicted=tuple(evicted),
        terminating=tuple(terminating),
        blocked=tuple(blocked),
        errors=tuple(errors),
        left_alone=tuple(left_alone),
    )
