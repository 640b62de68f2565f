"""The add-on step inside a reconcile pass: once the agent is connected (even before any node is Ready: the
CNI is what makes them Ready) the add-ons are applied in order, recorded, and AddonsReady says so; a
refusal stops the cluster at the step that failed, saying which add-on and why. The applier here records
what it is given; tests/provider/addons/test_addons_through_the_tunnel.py runs the real one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from kaas_core.db.models import Cluster, ClusterAddon, ClusterAgent, ClusterPhase, OperationState
from provider.addons.catalog import ADDONS
from provider.addons.kube_client import AddonApplyError
from provider.addons.reconcile import Applier
from provider.celery_app import build_context
from provider.config import ProviderSettings
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.provider.factories import PoolSpec, create_cluster
from tests.provider.reconciler.test_agent_gate import converge_cloud_side, report
from tests.provider.reconciler.test_reconcile import load

TUNNEL_ADDRESS = "http://127.0.0.1:9/internal"


@dataclass
class RecordingApplier:
    applied: list[dict[str, Any]] = field(default_factory=list)
    opened: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    refuse_kind: str | None = None
    temporary: bool = False

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        self.deleted.append((api_version, kind, name, namespace))

    def apply(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") == self.refuse_kind:
            raise AddonApplyError(
                f"apply {obj['kind']}: the cluster answered 422: invalid", temporary=self.temporary
            )
        self.applied.append(obj)

    @contextmanager
    def open(self, address: str, cluster_id: str) -> Iterator[Applier]:
        self.opened.append((address, cluster_id))
        yield self


def conditions_of(ctx: ProviderContext, cluster_id: str) -> dict[str, dict[str, str]]:
    cluster, _operation, _nodes = load(ctx.session_factory, cluster_id)
    return {c["type"]: c for c in cluster.conditions}


def with_tunnel_address(ctx: ProviderContext, cluster_id: str) -> None:
    with ctx.session_factory.begin() as session:
        session.get_one(ClusterAgent, cluster_id).tunnel_address = TUNNEL_ADDRESS


@pytest.fixture
def applier() -> RecordingApplier:
    return RecordingApplier()


@pytest.fixture
def gated(ctx: ProviderContext, applier: RecordingApplier) -> ProviderContext:
    return replace(ctx, require_agent=True, addons=applier.open)


def test_addons_go_in_once_the_agent_is_connected_before_the_nodes_are_ready(
    gated: ProviderContext, simcloud: SimCloudHandle, applier: RecordingApplier
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    assert applier.opened == []  # no agent yet: nothing to talk to
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    report(gated.session_factory, created.id, connected=True, ready={n.name: False for n in nodes})
    with_tunnel_address(gated, created.id)

    reconcile_cluster_once(gated, created.id, worker_id="w")
    assert applier.opened == [(TUNNEL_ADDRESS, created.id)]
    kinds = [obj["kind"] for obj in applier.applied]
    assert kinds.index("DaemonSet") < kinds.index("CSIDriver")  # flannel's DaemonSet before the CSI
    assert applier.applied[-1]["kind"] == "Deployment"  # the agent's own, last
    assert applier.applied[-1]["metadata"]["name"] == "kaas-agent"
    secret = next(o for o in applier.applied if o["metadata"].get("name") == "cloud-config")
    with gated.session_factory() as session:
        cluster = session.get_one(Cluster, created.id)
        assert (
            f"application-credential-id={cluster.cloud_credential_id}" in secret["stringData"]["cloud.conf"]
        )
        assert "auth-url=http://127.0.0.1:" in secret["stringData"]["cloud.conf"]  # simcloud's Keystone
        rows = session.scalars(select(ClusterAddon).where(ClusterAddon.cluster_id == created.id)).all()
    assert {r.name for r in rows} == {a.name for a in ADDONS}
    addons_ready = conditions_of(gated, created.id)["AddonsReady"]
    assert addons_ready["status"] == "True"
    assert conditions_of(gated, created.id)["NodesReady"]["status"] == "False"  # still waiting for them

    applier.applied.clear()
    report(gated.session_factory, created.id, connected=True, ready={n.name: True for n in nodes})
    with_tunnel_address(gated, created.id)
    assert reconcile_cluster_once(gated, created.id, worker_id="w").outcome == "converged"
    assert applier.applied == []  # recorded digests match: nothing sent again
    cluster, operation, _ = load(gated.session_factory, created.id)
    assert cluster.phase == ClusterPhase.RUNNING.value
    assert operation.state == OperationState.SUCCEEDED.value


@pytest.mark.parametrize("temporary", [True, False])
def test_a_refused_addon_keeps_the_cluster_from_running_and_says_which_and_why(
    gated: ProviderContext, simcloud: SimCloudHandle, applier: RecordingApplier, temporary: bool
) -> None:
    applier.refuse_kind, applier.temporary = "CSIDriver", temporary
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    _cluster, _operation, nodes = load(gated.session_factory, created.id)
    report(gated.session_factory, created.id, connected=True, ready={n.name: True for n in nodes})
    with_tunnel_address(gated, created.id)

    result = reconcile_cluster_once(gated, created.id, worker_id="w")
    cluster, operation, _ = load(gated.session_factory, created.id)
    addons_ready = conditions_of(gated, created.id)["AddonsReady"]
    assert addons_ready["status"] == "False"
    assert addons_ready["reason"] == "AddonApplyFailed"
    assert addons_ready["message"].startswith("2 of 5 add-ons applied; csi: apply CSIDriver")
    assert cluster.phase != ClusterPhase.RUNNING.value
    if temporary:
        assert result.outcome == "retrying"
        assert operation.step == "addons"
        assert operation.state == OperationState.RUNNING.value
    else:
        assert result.outcome == "failed"
        assert cluster.phase == ClusterPhase.ERROR.value
        assert operation.state == OperationState.FAILED.value
        assert operation.error is not None
        assert operation.error.startswith("addons: 2 of 5 add-ons applied; csi:")


def test_an_addon_left_out_by_the_settings_is_neither_applied_nor_awaited(
    gated: ProviderContext, simcloud: SimCloudHandle, applier: RecordingApplier
) -> None:
    settings = ProviderSettings(addons_left_out="metrics-server, csi")
    assert settings.addons_left_out == ["metrics-server", "csi"]
    ctx = replace(
        gated, addon_catalog=build_context(settings).addon_catalog  # as the workers build it
    )
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(ctx, created.id)
    _cluster, _operation, nodes = load(ctx.session_factory, created.id)
    report(ctx.session_factory, created.id, connected=True, ready={n.name: True for n in nodes})
    with_tunnel_address(ctx, created.id)

    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "converged"
    names = {obj["metadata"]["name"] for obj in applier.applied}
    assert "kaas-agent" in names
    assert "metrics-server" not in names
    assert "csi-cinder-controllerplugin" not in names
    with ctx.session_factory() as session:
        rows = session.scalars(select(ClusterAddon).where(ClusterAddon.cluster_id == created.id)).all()
    assert {r.name for r in rows} == {"cni", "cloud-provider", "kaas-agent"}
    assert conditions_of(ctx, created.id)["AddonsReady"]["status"] == "True"


def test_an_unknown_addon_to_leave_out_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"unknown add-on\(s\) metric-server; kaas has cni, "):
        ProviderSettings(addons_left_out=["metric-server"])
