"""Join waves: the first wave's token is kubeadm init's; once every node joined, kaas retires it and deletes
its Secret through the agent; a later wave (a scale-up) gets a new token, whose Secret kaas puts into the
cluster through the agent before any of the wave's servers is created with it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from sqlalchemy import select

from kaas_core.db.models import BootstrapToken, ClusterPhase
from kaas_core.security import SecretBox
from provider.bootstrap.cloud_init import KUBEADM_CONFIG_PATH
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.provider.addons.test_addons_step import RecordingApplier, with_tunnel_address
from tests.provider.factories import TEST_SECRET_KEY, PoolSpec, create_cluster, scale_pool
from tests.provider.reconciler.test_agent_gate import converge_cloud_side, report
from tests.provider.reconciler.test_reconcile import load


@pytest.fixture
def applier() -> RecordingApplier:
    return RecordingApplier()


@pytest.fixture
def gated(ctx: ProviderContext, applier: RecordingApplier) -> ProviderContext:
    return replace(ctx, require_agent=True, addons=applier.open)


def tokens(ctx: ProviderContext, cluster_id: str) -> list[BootstrapToken]:
    with ctx.session_factory() as session:
        return list(
            session.scalars(
                select(BootstrapToken)
                .where(BootstrapToken.cluster_id == cluster_id)
                .order_by(BootstrapToken.created_at)
            )
        )


def all_ready(ctx: ProviderContext, cluster_id: str) -> None:
    _cluster, _operation, nodes = load(ctx.session_factory, cluster_id)
    report(ctx.session_factory, cluster_id, connected=True, ready={n.name: True for n in nodes})
    with_tunnel_address(ctx, cluster_id)


def test_the_first_waves_token_is_retired_and_deleted_once_every_node_joined(
    gated: ProviderContext, simcloud: SimCloudHandle, applier: RecordingApplier
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    (first,) = tokens(gated, created.id)
    assert first.retired_at is None
    all_ready(gated, created.id)
    assert reconcile_cluster_once(gated, created.id, worker_id="w").outcome == "converged"
    (first,) = tokens(gated, created.id)
    assert first.retired_at is not None
    assert ("v1", "Secret", f"bootstrap-token-{first.token_id}", "kube-system") in applier.deleted
    # kubeadm init created it: kaas never had to publish the first wave's
    assert not [o for o in applier.applied if o.get("type") == "bootstrap.kubernetes.io/token"]


def test_a_later_wave_waits_for_its_token_to_reach_the_cluster_then_joins_with_it(
    gated: ProviderContext, simcloud: SimCloudHandle, applier: RecordingApplier
) -> None:
    created = create_cluster(gated.session_factory, pools=(PoolSpec(count=1),))
    converge_cloud_side(gated, created.id)
    all_ready(gated, created.id)
    assert reconcile_cluster_once(gated, created.id, worker_id="w").outcome == "converged"
    servers_before = set(simcloud.sim.tables["servers"])

    scale_pool(gated.session_factory, created.id, pool="workers", count=2)
    waiting = reconcile_cluster_once(gated, created.id, worker_id="w")
    assert "bootstrap token to reach the cluster" in waiting.message
    assert set(simcloud.sim.tables["servers"]) == servers_before  # no server with an unknown token
    second = tokens(gated, created.id)[-1]
    assert second.retired_at is None
    assert second.published_at is None

    with_tunnel_address(gated, created.id)
    reconcile_cluster_once(gated, created.id, worker_id="w")
    published = [o for o in applier.applied if o.get("type") == "bootstrap.kubernetes.io/token"]
    assert [o["metadata"]["name"] for o in published] == [f"bootstrap-token-{second.token_id}"]
    assert published[0]["stringData"]["token-id"] == second.token_id
    new_servers = set(simcloud.sim.tables["servers"]) - servers_before
    assert len(new_servers) == 1
    (server_id,) = new_servers
    user_data = simcloud.sim.get_user_data(server_id)
    assert user_data is not None
    files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
    join = next(yaml.safe_load_all(files[KUBEADM_CONFIG_PATH]))
    secret = SecretBox(TEST_SECRET_KEY).decrypt(second.secret_encrypted)
    assert join["discovery"]["bootstrapToken"]["token"] == f"{second.token_id}.{secret}"
    cluster, _operation, _ = load(gated.session_factory, created.id)
    assert cluster.phase == ClusterPhase.UPDATING.value
