"""kaas's own way into a user cluster: the ``kubernetes`` client, through the tunnel, as kaas's identity.

Called by the add-on step (``provider.addons.reconcile``) and the day-2 rollout (``provider.rollout``) in a
provider worker. The worker may not import the
API or the tunnel server (layers), so it builds the same internal hop the API's k8s proxy builds
(``kaas_core.internal_hop``): every request goes to the tunnel server holding the cluster's agent session,
``{address}/internal/v1/proxy/<path>?<query>``, with an assertion signed for exactly that method and target,
for the user ``system`` in the group ``kaas:system``. The tunnel server routes it to the cluster's agent,
which impersonates ``kaas:system`` (user and group; ``kaas-rbac.yaml`` binds the group to cluster-admin and
lets the agent impersonate it). Nothing but this hop reaches a user cluster's apiserver: kaas holds no
credential of its own there.

Requests are server-side applies (``application/apply-patch+yaml``, field manager ``kaas``, conflicts
forced: these objects are kaas's) through the client's dynamic API, whose discovery cache lives in a
folder of this client alone (all clusters share the tunnel server's URL, so a shared cache would mix them).
Errors leave as ``AddonApplyError``: temporary for what a retry can fix (the agent not connected, 5xx,
409, 429, a kind not served yet), permanent for what the cluster refuses (400, 403, 422).

``core()`` hands out the typed ``CoreV1Api`` on the same signed client, for the rollout's reads, cordons and
evictions (``provider.rollout.observe`` and ``drain``, which translate its errors into their own).
Every request is bounded by ``timeout`` (the client itself would wait forever).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import urllib3
from kubernetes import client as kube
from kubernetes import dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from kaas_core.internal_hop import ASSERTION_HEADER, INTERNAL_PROXY_PREFIX, ProxyAssertion

# the assertion's user (the tunnel server sends it as kaas:system) and group
KAAS_SYSTEM_USER = "system"
KAAS_SYSTEM_GROUP = "kaas:system"
FIELD_MANAGER = "kaas"
_DYNAMIC_CLIENT: Any = dynamic.DynamicClient
TEMPORARY_STATUSES = frozenset({0, 404, 409, 429, 500, 502, 503, 504})


class AddonApplyError(Exception):
    """An apply the cluster did not take; ``temporary`` when a later pass may succeed."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


class TunnelKubeClient:
    """A server-side-apply client of one cluster, through one tunnel server. Use it as a context manager."""

    def __init__(self, *, address: str, cluster_id: str, key: bytes, timeout: float = 30.0) -> None:
        self._cluster_id = cluster_id
        self._key = key
        self._timeout = timeout
        configuration: Any = kube.Configuration()
        configuration.host = address.rstrip("/") + INTERNAL_PROXY_PREFIX
        self._base = configuration.host
        self._api: Any = kube.ApiClient(configuration)  # the client's own annotations are partial
        rest: Any = self._api.rest_client
        self._plain_request = rest.request
        rest.request = self._signed_request  # every request of this client carries its own assertion
        self._cache_dir = tempfile.TemporaryDirectory(prefix="kaas-discovery-")
        self._dynamic: Any = None

    def _signed_request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        if not url.startswith(self._base):
            raise AddonApplyError(f"refusing a request outside the tunnel: {url}", temporary=False)
        assertion = ProxyAssertion.issue(
            cluster_id=self._cluster_id,
            user=KAAS_SYSTEM_USER,
            groups=(KAAS_SYSTEM_GROUP,),
            method=method,
            target=url[len(self._base) :],
            now=time.time(),
        )
        signed = {**(headers or {}), ASSERTION_HEADER: assertion.sign(self._key)}
        # the generated client passes _request_timeout=None explicitly when the caller gave none
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self._timeout
        return self._plain_request(method, url, headers=signed, **kwargs)

    def __enter__(self) -> TunnelKubeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()
        self._cache_dir.cleanup()

    def core(self) -> Any:
        """The ``kubernetes`` CoreV1Api of this cluster, every request signed and through the tunnel."""
        return kube.CoreV1Api(self._api)

    def _client(self) -> Any:
        if self._dynamic is None:
            with _translated("discover the cluster's API"):
                self._dynamic = _DYNAMIC_CLIENT(
                    self._api, cache_file=str(Path(self._cache_dir.name) / "discovery.json")
                )
        return self._dynamic

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply of one object, kaas owning every field it sets."""
        client = self._client()
        what = _describe(obj)
        with _translated(f"apply {what}"):
            try:
                resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            except ResourceNotFoundError:
                # a kind whose CRD was applied a moment ago: ask discovery again once
                client.resources.invalidate_cache()
                resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            client.server_side_apply(resource, body=obj, field_manager=FIELD_MANAGER, force_conflicts=True)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one object; one already gone is not an error."""
        client = self._client()
        with _translated(f"delete {kind} {name}"):
            resource = client.resources.get(api_version=api_version, kind=kind)
            try:
                client.delete(resource, name=name, namespace=namespace)
            except DynamicApiError as exc:
                if exc.status != 404:
                    raise


class _translated:
    """Re-raise the client's and urllib3's errors as ``AddonApplyError``, saying what was being done."""

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or isinstance(exc, AddonApplyError):
            return False
        if isinstance(exc, DynamicApiError | ApiException):
            status = int(getattr(exc, "status", 0) or 0)
            reason = str(
                getattr(exc, "summary", lambda: "")() if isinstance(exc, DynamicApiError) else exc.reason
            )
            raise AddonApplyError(
                f"{self._action}: the cluster answered {status}: {reason}"[:2000],
                temporary=status in TEMPORARY_STATUSES or status >= 500,
            ) from exc
        if isinstance(exc, ValueError | KeyError):  # an object without kind, name or namespace
            raise AddonApplyError(
                f"{self._action}: not an object kaas can apply: {exc}", temporary=False
            ) from exc
        if isinstance(exc, ResourceNotFoundError):
            raise AddonApplyError(
                f"{self._action}: the cluster does not serve this kind yet", temporary=True
            ) from exc
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            raise AddonApplyError(
                f"{self._action}: cannot reach the cluster's tunnel: {exc}", temporary=True
            ) from exc
        return False
