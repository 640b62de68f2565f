"""The end-of-campaign checks that need no API: leaked cloud resources, clusters and operations left behind.

Owned by ``tests/chaos``. The cloud is read as its admin (``openstacksdk``), limited to the project the
campaign's kaas works in: a resource is kaas's when it carries a ``kaas-cluster=`` tag, has such a
description (born, never tagged: a worker killed between the two calls) or a ``kaas-`` name. Once every
lifecycle has deleted its cluster, each such resource is a leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
from openstack.config import loader
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, Node, Operation, OperationState
from provider.cloud.driver import CLUSTER_TAG_PREFIX

FINAL_PHASES = (ClusterPhase.RUNNING.value, ClusterPhase.DELETED.value, ClusterPhase.ERROR.value)
NAME_PREFIX = "kaas-"


def admin_connection(clouds_yaml: Path, cloud: str) -> Any:
    config = loader.OpenStackConfig(config_files=[str(clouds_yaml)], load_envvars=False)
    return openstack.connection.Connection(config=config.get_one(cloud=cloud))


def _marked(resource: Any) -> bool:
    tags = list(getattr(resource, "tags", None) or [])
    description = str(getattr(resource, "description", None) or "")
    name = str(getattr(resource, "name", None) or "")
    return (
        any(tag.startswith(CLUSTER_TAG_PREFIX) for tag in tags)
        or description.startswith(CLUSTER_TAG_PREFIX)
        or name.startswith(NAME_PREFIX)
    )


def _of_project(resources: Iterable[Any], project_id: str) -> list[Any]:
    """Filtered here rather than by query: not every API (nor the simulator) filters every listing."""
    return [r for r in resources if getattr(r, "project_id", None) == project_id]


def _floating_ips(admin: Any, project_id: str) -> list[Any]:
    """Any in the project is a leak (kaas allocates none); the simulator has no floating IP API at all."""
    try:
        return _of_project(admin.network.ips(), project_id)
    except openstack.exceptions.NotFoundException:
        return []


@dataclass(frozen=True)
class CloudView:
    """The campaign's project of the cloud, seen by its admin."""

    admin: Any
    project_id: str

    def kaas_resources(self) -> dict[str, list[str]]:
        """Every kaas resource of the project, by kind (names, or ids of the nameless)."""
        admin, project = self.admin, self.project_id
        listings: dict[str, list[Any]] = {
            "servers": _of_project(admin.compute.servers(all_projects=True), project),
            "server_groups": _of_project(admin.compute.server_groups(all_projects=True), project),
            "networks": _of_project(admin.network.networks(), project),
            "subnets": _of_project(admin.network.subnets(), project),
            "routers": _of_project(admin.network.routers(), project),
            "ports": _of_project(admin.network.ports(), project),
            "security_groups": _of_project(admin.network.security_groups(), project),
            "floating_ips": _floating_ips(admin, project),
            "load_balancers": [
                lb
                for lb in _of_project(admin.load_balancer.load_balancers(), project)
                if lb.provisioning_status != "DELETED"
            ],
        }
        found: dict[str, list[str]] = {}
        for kind, resources in listings.items():
            marked = [str(r.name or r.id) for r in resources if _marked(r) or kind == "floating_ips"]
            if marked:
                found[kind] = sorted(marked)
        return found

    def servers_of(self, cluster_id: str) -> int:
        tag = f"{CLUSTER_TAG_PREFIX}{cluster_id}"
        return sum(
            1
            for server in _of_project(
                self.admin.compute.servers(all_projects=True, tags=tag), self.project_id
            )
            if server.status not in ("DELETED", "SOFT_DELETED")
        )


def node_rows(session_factory: sessionmaker[Session], cluster_id: str) -> int:
    with session_factory() as session:
        return int(
            session.scalar(select(func.count()).select_from(Node).where(Node.cluster_id == cluster_id)) or 0
        )


def clusters_outside_a_final_phase(session_factory: sessionmaker[Session]) -> dict[str, str]:
    with session_factory() as session:
        rows = session.execute(
            select(Cluster.name, Cluster.phase).where(Cluster.phase.not_in(FINAL_PHASES))
        ).all()
    return dict(rows)


def failed_clusters(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as session:
        return list(
            session.scalars(select(Cluster.name).where(Cluster.phase == ClusterPhase.ERROR.value)).all()
        )


def operations_stuck(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as session:
        rows = session.execute(
            select(Operation.id, Operation.kind, Operation.step).where(
                Operation.state.in_([OperationState.PENDING.value, OperationState.RUNNING.value])
            )
        ).all()
    return [f"{kind} {operation_id} at {step}" for operation_id, kind, step in rows]
