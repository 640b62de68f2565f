"""Sample nodes for the bootstrap tests: one PKI per test session, and NodeBootstrap values for each role,
overridable field by field."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from provider.bootstrap.cloud_init import JoinMaterial, NodeBootstrap
from provider.bootstrap.pki import ClusterPki, generate_cluster_pki

CLUSTER_ID = "4f1c2d3e-0000-4000-8000-000000000001"
AGENT_TOKEN = "kaasagent_secret-token"
JOIN_TOKEN = "abcdef.0123456789abcdef"
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@functools.cache
def sample_pki() -> ClusterPki:
    return generate_cluster_pki(now=datetime.now(UTC))


def join_material(
    *, control_plane: bool, initializes: bool = False, pki: ClusterPki | None = None
) -> JoinMaterial:
    authorities = pki or sample_pki()
    return JoinMaterial(
        token=JOIN_TOKEN,
        token_expires_at=NOW + timedelta(hours=4),
        ca_cert_hash=authorities.ca_cert_hash,
        authorities=authorities if control_plane else None,
        initializes=initializes,
        rendered_at=NOW,
    )


def worker_node(**overrides: object) -> NodeBootstrap:
    values: dict[str, object] = {
        "cluster_id": CLUSTER_ID,
        "node_name": "kaas-4f1c2d3e-workers-ab12c",
        "role": "worker",
        "kubernetes_version": "1.36.3",
        "pod_cidr": "10.244.0.0/16",
        "service_cidr": "10.96.0.0/12",
        "api_endpoint": "https://10.0.0.10:6443",
        "tunnel_url": "wss://kaas.example.com/v1/tunnel",
        "agent_token": None,
        "join": join_material(control_plane=False),
        "node_pool": "workers",
        "labels": {"tier": "web", "example.com/team": "blue"},
        "taints": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}],
    }
    values.update(overrides)
    return NodeBootstrap(**values)  # type: ignore[arg-type]


def control_plane_node(*, initializes: bool = True, **overrides: object) -> NodeBootstrap:
    values: dict[str, object] = {
        "node_name": "kaas-4f1c2d3e-cp-1",
        "role": "control-plane",
        "agent_token": AGENT_TOKEN,
        "join": join_material(control_plane=True, initializes=initializes),
        "node_pool": None,
        "labels": {},
        "taints": [],
    }
    values.update(overrides)
    return worker_node(**values)


def with_join(node: NodeBootstrap, **changes: object) -> NodeBootstrap:
    return replace(node, join=replace(node.join, **changes))  # type: ignore[arg-type]
