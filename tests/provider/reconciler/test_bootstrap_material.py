"""The reconciler builds every server of a cluster from one PKI that kaas owns: generated on the first pass,
stored encrypted, committed before any server is built from it; the first control plane initializes, the
others and the workers join with the wave's bootstrap token; the region decides the image."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import (
    BootstrapToken,
    Cluster,
    ClusterAuthority,
    ClusterPhase,
    OperationKind,
    Region,
    as_utc,
    utcnow,
)
from kaas_core.security import SecretBox
from provider.bootstrap.cloud_init import KUBEADM_CONFIG_PATH
from provider.bootstrap.pki import ca_cert_hash
from provider.reconciler.context import ProviderContext
from provider.reconciler.pki_store import JOIN_TOKEN_TTL, load_cluster_pki
from provider.reconciler.reconcile import reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.provider.factories import TEST_SECRET_KEY, PoolSpec, create_cluster, request_operation
from tests.provider.harness import make_context, run_until_settled

BOX = SecretBox(TEST_SECRET_KEY)


def user_data_by_server(simcloud: SimCloudHandle) -> dict[str, str]:
    found = {}
    for server in simcloud.sim.tables["servers"].values():
        text = simcloud.sim.get_user_data(server["id"])
        assert text is not None
        found[server["name"]] = text
    return found


def files_of(user_data: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}


def kubeadm_of(user_data: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(files_of(user_data)[KUBEADM_CONFIG_PATH]))


def test_every_server_is_built_from_the_one_stored_pki(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, control_plane_count=3, pools=(PoolSpec(count=2),))
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    with ctx.session_factory() as session:
        rows = session.scalars(
            select(ClusterAuthority).where(ClusterAuthority.cluster_id == created.id)
        ).all()
        assert sorted(r.kind for r in rows) == ["cluster-ca", "etcd-ca", "front-proxy-ca", "service-account"]
        assert all("PRIVATE KEY" not in r.key_encrypted for r in rows)  # encrypted at rest
        pki = load_cluster_pki(session, created.id, box=BOX)
        tokens = session.scalars(select(BootstrapToken).where(BootstrapToken.cluster_id == created.id)).all()
    assert pki is not None
    assert len(tokens) == 1
    token = f"{tokens[0].token_id}.{BOX.decrypt(tokens[0].secret_encrypted)}"
    expires_at = as_utc(tokens[0].expires_at)
    assert expires_at is not None
    assert expires_at - utcnow() <= JOIN_TOKEN_TTL

    user_data = user_data_by_server(simcloud)
    initializing = []
    for name, text in user_data.items():
        files = files_of(text)
        documents = kubeadm_of(text)
        if "-cp-" in name:
            assert files["/etc/kubernetes/pki/ca.crt"] == pki.cluster_ca.public_pem
            assert files["/etc/kubernetes/pki/ca.key"] == pki.cluster_ca.key_pem
            assert files["/etc/kubernetes/pki/etcd/ca.key"] == pki.etcd_ca.key_pem
            assert files["/etc/kubernetes/pki/sa.key"] == pki.service_account.key_pem
        else:
            assert "PRIVATE KEY" not in text
            assert not any(path.startswith("/etc/kubernetes/pki") for path in files)
        if documents[0]["kind"] == "InitConfiguration":
            initializing.append(name)
            assert documents[0]["bootstrapTokens"][0]["token"] == token
            assert documents[1]["controlPlaneEndpoint"].endswith(":6443")
        else:
            discovery = documents[0]["discovery"]["bootstrapToken"]
            assert discovery["token"] == token
            assert discovery["caCertHashes"] == [ca_cert_hash(pki.cluster_ca.public_pem)]
    assert initializing == [f"kaas-{created.id[:8]}-cp-1"]
    # a second look changes nothing: the PKI is generated once
    assert reconcile_cluster_once(ctx, created.id, worker_id="again").outcome == "converged"
    with ctx.session_factory() as session:
        again = load_cluster_pki(session, created.id, box=BOX)
    assert again == pki


class WorkerCrash(BaseException):
    """A worker dying mid-pass: nothing of the pass's own transaction is committed."""


def test_the_pki_outlives_a_pass_that_dies_after_building_a_server(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))

    def crash(step: str) -> None:
        if step == "control_plane":
            raise WorkerCrash(step)

    def run_until_the_crash() -> None:  # earlier passes may stop short of the step
        for _ in range(50):
            reconcile_cluster_once(replace(ctx, after_step=crash), created.id, worker_id="doomed")
            time.sleep(0.05)

    with pytest.raises(WorkerCrash):
        run_until_the_crash()
    first_server = user_data_by_server(simcloud)
    assert len(first_server) == 1
    with ctx.session_factory() as session, session.begin():
        session.get_one(Cluster, created.id).lease_expires_at = utcnow() - timedelta(seconds=1)
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    with ctx.session_factory() as session:
        pki = load_cluster_pki(session, created.id, box=BOX)
    assert pki is not None
    (cp_data,) = first_server.values()
    assert files_of(cp_data)["/etc/kubernetes/pki/ca.crt"] == pki.cluster_ca.public_pem
    for name, text in user_data_by_server(simcloud).items():
        if "-cp-" not in name:
            assert kubeadm_of(text)[0]["discovery"]["bootstrapToken"]["caCertHashes"] == [pki.ca_cert_hash]


def test_a_stored_ca_that_cannot_be_used_fails_the_cluster_saying_why(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome in ("progressing", "converged")
    with ctx.session_factory() as session, session.begin():
        rows = session.scalars(
            select(ClusterAuthority).where(ClusterAuthority.cluster_id == created.id)
        ).all()
        by_kind = {r.kind: r for r in rows}
        # the cluster CA's certificate with the etcd CA's key: a corrupted or mixed-up store
        by_kind["cluster-ca"].key_encrypted = by_kind["etcd-ca"].key_encrypted
    result = reconcile_cluster_once(ctx, created.id, worker_id="w")
    assert result.outcome == "failed"
    with ctx.session_factory() as session:
        cluster = session.get_one(Cluster, created.id)
        assert cluster.phase == ClusterPhase.ERROR.value
        condition = {c["type"]: c for c in cluster.conditions}["NetworkReady"]
    assert "cluster-ca key does not match its certificate" in result.message
    assert condition["reason"] == "BootstrapError"


def test_a_region_with_an_image_per_version_boots_that_image(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with ctx.session_factory() as session, session.begin():
        region = session.scalars(select(Region)).one()
        region.node_images = {"1.30.2": "fake-image"}  # a seeded image of simcloud, not the region's default
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    images = {i["id"]: i["name"] for i in simcloud.sim.tables["images"].values()}
    booted = {images[s["_image_id"]] for s in simcloud.sim.tables["servers"].values()}
    assert booted == {"fake-image"}


def test_on_sqlite_the_pki_and_token_transactions_do_not_wait_on_the_pass(
    sqlite_session_factory: sessionmaker[Session], simcloud: SimCloudHandle
) -> None:
    """The embedded mode's database has one writer at a time: the PKI's and the token's own commits must
    happen while the pass's session has written nothing (else they would wait for it forever)."""
    ctx = make_context(sqlite_session_factory, simcloud.clouds_yaml)
    created = create_cluster(sqlite_session_factory, pools=(PoolSpec(count=1),))
    started = time.monotonic()
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    assert time.monotonic() - started < 60
    with sqlite_session_factory() as session:
        assert load_cluster_pki(session, created.id, box=BOX) is not None


def test_each_cluster_gets_one_cloud_credential_stored_encrypted_and_deleted_with_it(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    assert reconcile_cluster_once(ctx, created.id, worker_id="again").outcome == "converged"
    credentials = list(simcloud.sim.tables["application_credentials"].values())
    assert len(credentials) == 1  # made once, however many passes
    with ctx.session_factory() as session:
        cluster = session.get_one(Cluster, created.id)
        assert cluster.cloud_credential_id == credentials[0]["id"]
        assert cluster.cloud_credential_secret_encrypted is not None
        assert credentials[0]["_secret"] not in cluster.cloud_credential_secret_encrypted
        assert BOX.decrypt(cluster.cloud_credential_secret_encrypted) == credentials[0]["_secret"]
    assert credentials[0]["description"] == f"kaas-cluster={created.id}"
    request_operation(ctx.session_factory, created.id, kind=OperationKind.DELETE, phase=ClusterPhase.DELETING)
    assert run_until_settled(ctx, created.id)[-1].outcome == "deleted"
    assert simcloud.sim.tables["application_credentials"] == {}
    with ctx.session_factory() as session:
        cluster = session.get_one(Cluster, created.id)
        assert cluster.cloud_credential_id is None
        assert cluster.cloud_credential_secret_encrypted is None
