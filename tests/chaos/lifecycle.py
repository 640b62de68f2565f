"""Cluster lifecycles through the API, as a careful user drives them while parts of kaas are being killed.

Owned by ``tests/chaos``; the campaign runs several at once. One lifecycle: create a cluster (one
control-plane node, a pool of one), wait until it runs, scale the pool to two, wait, check that the node
counts agree (what the user asked for, what kaas observed, what Kubernetes reports Ready, the servers the
cloud has, kaas's node rows), delete it, wait until it is gone.

A request whose answer is lost (the API was killed mid-request, or refused the connection while down) is
not an error: the client reads back what happened (the cluster by name, its pool count, its phase) and
sends the request again only if it did not happen. Every answer of the API with a 5xx status is recorded:
the chaos test demands none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


class LifecycleFailed(RuntimeError):
    """A lifecycle that ended in a failed cluster or waited past its bound (a stuck cluster)."""


@dataclass
class ServerErrors:
    """Every 5xx answer of the API (method, path, status, start of the body), across threads."""

    seen: list[tuple[str, str, int, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, response: httpx.Response) -> None:
        if response.status_code >= 500:
            response.read()
            with self._lock:
                self.seen.append(
                    (
                        response.request.method,
                        response.request.url.path,
                        response.status_code,
                        response.text[:200],
                    )
                )


@dataclass
class NodeCountCheck:
    cluster: str
    desired: int
    observed: int
    ready: int
    rows: int
    servers: int

    @property
    def matches(self) -> bool:
        return self.desired == self.observed == self.ready == self.rows == self.servers


@dataclass
class LifecycleResult:
    name: str
    cluster_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # step -> how long it took
    node_counts: NodeCountCheck | None = None
    error: str | None = None
    retried_requests: int = 0


class ApiUser:
    """The API as one user sees it: ``request`` retries through an API that is down (connection refused,
    reset, timed out) until ``outage_seconds`` pass."""

    def __init__(
        self, *, base_url: str, token: str, project: str, errors: ServerErrors, outage_seconds: float = 120.0
    ) -> None:
        self.base_url = base_url
        self.project = project
        self.outage_seconds = outage_seconds
        self.client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            trust_env=False,
            event_hooks={"response": [errors.hook]},
        )

    def close(self) -> None:
        self.client.close()

    def clusters_path(self, suffix: str = "") -> str:
        return f"/v1/projects/{self.project}/clusters{suffix}"

    def once(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One attempt: the response, or None if the API did not answer (down, killed mid-request)."""
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.TransportError:
            return None

    def reliably(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """For reads: retried until answered (bounded by ``outage_seconds``)."""
        deadline = time.monotonic() + self.outage_seconds
        while True:
            response = self.once(method, path, **kwargs)
            if response is not None and response.status_code < 500:
                return response
            if time.monotonic() > deadline:
                raise LifecycleFailed(
                    f"{method} {path}: the API did not answer for {self.outage_seconds:g} s"
                )
            time.sleep(0.5)


@dataclass
class LifecycleSpec:
    name: str
    region: str
    flavor: str
    node_cidr: str
    step_timeout: float


ServerCounter = Callable[[str], int]  # cluster id -> servers the cloud has for it
RowCounter = Callable[[str], int]  # cluster id -> kaas's node rows for it


def run_lifecycle(
    spec: LifecycleSpec,
    user: ApiUser,
    *,
    count_servers: ServerCounter,
    count_rows: RowCounter,
    create_via: Callable[[dict[str, Any]], httpx.Response | None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> LifecycleResult:
    """Create, run, scale, check node counts, delete. ``create_via`` sends the create elsewhere (the API
    killed after its commit); its answer may be lost like any other."""
    result = LifecycleResult(name=spec.name)
    try:
        _drive(spec, user, result, count_servers, count_rows, create_via, on_step or (lambda _: None))
    except LifecycleFailed as exc:
        result.error = str(exc)
    return result


def _drive(
    spec: LifecycleSpec,
    user: ApiUser,
    result: LifecycleResult,
    count_servers: ServerCounter,
    count_rows: RowCounter,
    create_via: Callable[[dict[str, Any]], httpx.Response | None] | None,
    on_step: Callable[[str], None],
) -> None:
    body = {
        "name": spec.name,
        "region": spec.region,
        "control_plane": {"count": 1, "flavor": spec.flavor},
        "node_pools": [{"name": "workers", "flavor": spec.flavor, "count": 1}],
        "node_cidr": spec.node_cidr,
    }
    on_step("create")
    started = time.monotonic()
    cluster_id = create_cluster(user, body, result, create_via)
    result.cluster_id = cluster_id
    wait_phase(user, cluster_id, "running", timeout=spec.step_timeout)
    result.seconds["create"] = time.monotonic() - started

    on_step("scale")
    started = time.monotonic()
    _scale(user, cluster_id, count=2, result=result)
    wait_phase(user, cluster_id, "running", timeout=spec.step_timeout, generation_settled=True)
    result.seconds["scale"] = time.monotonic() - started
    result.node_counts = _node_counts(user, cluster_id, count_servers, count_rows)

    on_step("delete")
    started = time.monotonic()
    delete_cluster(user, cluster_id, result)
    wait_phase(user, cluster_id, "deleted", timeout=spec.step_timeout)
    result.seconds["delete"] = time.monotonic() - started


def _find(user: ApiUser, name: str) -> str | None:
    response = user.reliably("GET", user.clusters_path(f"/{name}"))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return str(response.json()["id"])


def create_cluster(
    user: ApiUser,
    body: dict[str, Any],
    result: LifecycleResult,
    create_via: Callable[[dict[str, Any]], httpx.Response | None] | None,
) -> str:
    sender = create_via or (lambda document: user.once("POST", user.clusters_path(), json=document))
    deadline = time.monotonic() + user.outage_seconds
    while True:
        response = sender(body)
        sender = lambda document: user.once("POST", user.clusters_path(), json=document)  # noqa: E731
        if response is not None and response.status_code == 202:
            return str(response.json()["cluster"]["id"])
        if response is not None and response.status_code not in (409,) and response.status_code < 500:
            raise LifecycleFailed(f"create {body['name']}: {response.status_code} {response.text[:300]}")
        # no answer, a 5xx or a name conflict: did the create happen? (it may have, answer lost)
        found = _find(user, str(body["name"]))
        if found is not None:
            return found
        result.retried_requests += 1
        if time.monotonic() > deadline:
            raise LifecycleFailed(f"create {body['name']}: no answer for {user.outage_seconds:g} s")
        time.sleep(0.5)


def _scale(user: ApiUser, cluster_id: str, *, count: int, result: LifecycleResult) -> None:
    path = user.clusters_path(f"/{cluster_id}")
    deadline = time.monotonic() + user.outage_seconds
    while True:
        response = user.once("PATCH", path, json={"node_pools": [{"name": "workers", "count": count}]})
        if response is not None and response.status_code == 202:
            return
        if response is not None and response.status_code == 409:
            time.sleep(0.5)  # still busy with the create's last steps: ask again
        elif response is not None and response.status_code < 500:
            raise LifecycleFailed(f"scale {cluster_id}: {response.status_code} {response.text[:300]}")
        current = user.reliably("GET", path).json()
        if any(p["name"] == "workers" and p["count"] == count for p in current["node_pools"]):
            return  # it happened, the answer was lost
        result.retried_requests += 1
        if time.monotonic() > deadline:
            raise LifecycleFailed(f"scale {cluster_id}: refused for {user.outage_seconds:g} s")


def delete_cluster(user: ApiUser, cluster_id: str, result: LifecycleResult) -> None:
    path = user.clusters_path(f"/{cluster_id}")
    deadline = time.monotonic() + user.outage_seconds
    while True:
        response = user.once("DELETE", path)
        if response is not None and response.status_code == 202:
            return
        if response is not None and response.status_code < 500 and response.status_code != 409:
            raise LifecycleFailed(f"delete {cluster_id}: {response.status_code} {response.text[:300]}")
        phase = user.reliably("GET", path).json()["phase"]
        if phase in ("deleting", "deleted"):
            return
        result.retried_requests += 1
        if time.monotonic() > deadline:
            raise LifecycleFailed(f"delete {cluster_id}: refused for {user.outage_seconds:g} s")
        time.sleep(0.5)


def wait_phase(
    user: ApiUser, cluster_id: str, phase: str, *, timeout: float, generation_settled: bool = False
) -> None:
    path = user.clusters_path(f"/{cluster_id}")
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = user.reliably("GET", path).json()
        if last["phase"] == "error":
            raise LifecycleFailed(f"cluster {cluster_id} failed: {last.get('conditions')}")
        settled = not generation_settled or last["observed_generation"] >= last["generation"]
        if last["phase"] == phase and settled:
            return
        time.sleep(0.5)
    raise LifecycleFailed(
        f"cluster {cluster_id} stuck: still {last.get('phase')!r} after {timeout:g} s, waiting for {phase!r}"
        f" (conditions {last.get('conditions')})"
    )


def _node_counts(
    user: ApiUser, cluster_id: str, count_servers: ServerCounter, count_rows: RowCounter
) -> NodeCountCheck:
    cluster = user.reliably("GET", user.clusters_path(f"/{cluster_id}")).json()
    counts = cluster["node_counts"]
    return NodeCountCheck(
        cluster=cluster_id,
        desired=counts["desired"],
        observed=counts["observed"],
        ready=counts["ready"],
        rows=count_rows(cluster_id),
        servers=count_servers(cluster_id),
    )
