"""The add-on step: once a cluster's agent is connected, apply each add-on of the catalog that is missing,
changed or due for a resync, in order, and record what was applied; the AddonsReady condition says how far
it got and, when it stopped, at which add-on and why.

Called by the reconcile pass (``provider.reconciler.reconcile``) after the cloud steps, with the pass's
session (it only adds and changes ``cluster_addons`` rows: the pass commits). Idempotent twice over: a
server-side apply of the same objects changes nothing, and an add-on whose recorded digest matches what it
would apply is not sent at all (until ``resync`` has passed, so that an object deleted in the cluster comes
back). A converged cluster therefore costs no request through its tunnel on most passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaas_core.db.models import ClusterAddon, as_utc
from provider.addons.catalog import ADDONS, Addon, AddonInputs, digest
from provider.addons.kube_client import AddonApplyError, TunnelKubeClient

ADDONS_READY = "AddonsReady"
ADDON_RESYNC = timedelta(hours=1)


class Applier(Protocol):
    def apply(self, obj: dict[str, Any]) -> None: ...

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None: ...


# (the address of the tunnel server holding the agent's session, the cluster id) -> an applier for the block
ApplierFactory = Callable[[str, str], AbstractContextManager[Applier]]


def tunnel_applier_factory(key: bytes, *, timeout: float = 30.0) -> ApplierFactory:
    """Appliers that go through the tunnel (``provider.addons.kube_client``) signed with ``key``."""

    @contextmanager
    def open_applier(address: str, cluster_id: str) -> Iterator[Applier]:
        with TunnelKubeClient(address=address, cluster_id=cluster_id, key=key, timeout=timeout) as client:
            yield client

    return open_applier


@dataclass(frozen=True)
class AddonsOutcome:
    """How the step ended: ``ready`` when every add-on is applied as it should be."""

    ready: bool
    status: bool | None  # AddonsReady's status
    reason: str
    message: str
    error: AddonApplyError | None = None


def _due(
    addon: Addon, objects: list[dict[str, Any]], row: ClusterAddon | None, *, now: datetime, resync: timedelta
) -> bool:
    if row is None or row.version != addon.version or row.digest != digest(objects):
        return True
    applied_at = as_utc(row.applied_at)
    return applied_at is None or now - applied_at >= resync


def reconcile_addons(
    session: Session,
    cluster_id: str,
    *,
    inputs: AddonInputs,
    tunnel_address: str,
    open_applier: ApplierFactory,
    now: datetime,
    addons: tuple[Addon, ...] = ADDONS,
    resync: timedelta = ADDON_RESYNC,
) -> AddonsOutcome:
    rows = {
        row.name: row
        for row in session.scalars(select(ClusterAddon).where(ClusterAddon.cluster_id == cluster_id))
    }
    rendered = [(addon, addon.objects(inputs)) for addon in addons]
    due = [
        (addon, objects)
        for addon, objects in rendered
        if _due(addon, objects, rows.get(addon.name), now=now, resync=resync)
    ]
    done = len(addons) - len(due)
    current = ""
    if due:
        try:
            with open_applier(tunnel_address, cluster_id) as applier:
                for addon, objects in due:
                    current = addon.name
                    for obj in objects:
                        applier.apply(obj)
                    row = rows.get(addon.name) or ClusterAddon(cluster_id=cluster_id, name=addon.name)
                    row.version, row.digest, row.applied_at = addon.version, digest(objects), now
                    session.add(row)
                    done += 1
        except AddonApplyError as exc:
            return AddonsOutcome(
                ready=False,
                status=False,
                reason="AddonApplyFailed",
                message=f"{done} of {len(addons)} add-ons applied; {current}: {exc}",
                error=exc,
            )
    versions = ", ".join(f"{addon.name} {addon.version}" for addon in addons)
    return AddonsOutcome(ready=True, status=True, reason="Applied", message=versions)
