"""``kaas cluster upgrade``, ``kaas cluster node-pool upgrade``, ``kaas cluster update --maintenance-window``
and ``kaas operation resume|pause|rollback|cancel`` against the API; ``--wait`` stops at a pause."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Operation, Region
from tests.kaas_api.conftest import finish_operations
from tests.kaas_cli.commands.conftest import Cli, fields, rows

HA_BODY = {
    "name": "ha",
    "region": "r1",
    "kubernetes_version": "1.29.6",
    "control_plane": {"count": 3, "flavor": "small"},
    "node_pools": [{"name": "p1", "flavor": "small", "count": 2}],
}


@pytest.fixture
def ha(cli: Cli, session_factory: sessionmaker[Session]) -> Cli:
    with session_factory() as session:
        region = session.scalars(select(Region).where(Region.name == "r1")).one()
        region.kubernetes_versions = ["1.29.6", "1.30.2"]
        session.commit()
    response = cli.world.call("owner", "POST", "/v1/projects/alpha/clusters", HA_BODY)
    assert response.status_code == 202, response.text
    finish_operations(session_factory)
    return cli


def set_operation(session_factory: sessionmaker[Session], operation_id: str, **values: object) -> None:
    with session_factory() as session, session.begin():
        operation = session.get_one(Operation, operation_id)
        for name, value in values.items():
            setattr(operation, name, value)


def test_cluster_upgrade_sends_the_version_and_the_strategy(ha: Cli) -> None:
    result = ha.shown(
        "json", "cluster", "upgrade", "ha", "1.30.2", "--max-surge", "2", "--drain-timeout", "120"
    )
    params = result["operation"]["params"]
    assert (params["to_version"], params["max_surge"], params["drain_timeout_seconds"]) == ("1.30.2", 2, 120)
    assert params["max_unavailable"] == 0  # the server's default: not sent
    assert result["cluster"]["kubernetes_version"] == "1.30.2"


def test_cluster_upgrade_shows_the_refusal_and_exits_1(ha: Cli) -> None:
    result = ha.run("cluster", "upgrade", "c1", "1.30.2")
    assert result.exit_code == 1
    assert "3 control-plane nodes" in result.stderr


def test_cluster_upgrade_wait_exits_1_with_the_reason_when_the_upgrade_pauses(
    ha: Cli, session_factory: sessionmaker[Session]
) -> None:
    def the_rollout_pauses(request: httpx.Request) -> None:
        if request.url.path.startswith("/v1/operations/"):
            set_operation(
                session_factory,
                request.url.path.rsplit("/", 1)[1],
                state="paused",
                paused_reason="node ha-p1-x not Ready within 600s",
            )

    ha.transport.on_request = the_rollout_pauses
    result = ha.run("cluster", "upgrade", "ha", "1.30.2", "--wait", "--timeout", "30", "-o", "json")
    assert result.exit_code == 1
    assert "operation paused" in result.stderr
    assert "node ha-p1-x not Ready within 600s" in result.stderr
    assert "kaas operation resume" in result.stderr


def test_cluster_upgrade_wait_succeeds_when_the_upgrade_does(
    ha: Cli, session_factory: sessionmaker[Session]
) -> None:
    def the_rollout_finishes(request: httpx.Request) -> None:
        if request.url.path.startswith("/v1/operations/"):
            set_operation(
                session_factory, request.url.path.rsplit("/", 1)[1], state="succeeded", progress=100
            )

    ha.transport.on_request = the_rollout_finishes
    result = ha.run("cluster", "upgrade", "ha", "1.30.2", "--wait", "--timeout", "30", "-o", "json")
    assert result.exit_code == 0, result.stderr


def test_node_pool_upgrade_defaults_to_the_clusters_version(
    ha: Cli, session_factory: sessionmaker[Session]
) -> None:
    ha.world.call("owner", "PATCH", "/v1/projects/alpha/clusters/ha", {"kubernetes_version": "1.30.2"})
    finish_operations(session_factory)
    with session_factory() as session, session.begin():
        for operation in session.scalars(select(Operation).where(Operation.kind == "upgrade")):
            operation.state = "succeeded"
    # the pool went to 1.30.2 with the cluster: a pool upgrade to the same version is refused, by the server
    result = ha.run("cluster", "node-pool", "upgrade", "ha", "p1")
    assert result.exit_code == 1
    assert "already runs Kubernetes 1.30.2" in result.stderr


def test_node_pool_upgrade_sends_its_version(ha: Cli) -> None:
    result = ha.run("cluster", "node-pool", "upgrade", "ha", "p1", "1.30.2", "-o", "json")
    assert result.exit_code == 1  # newer than the control plane
    assert "newer than its control plane at 1.29.6" in result.stderr


def test_update_sets_and_removes_the_maintenance_window(ha: Cli) -> None:
    shown = ha.shown("json", "cluster", "update", "ha", "--maintenance-window", "sun 02:00 240 Asia/Tokyo")
    assert shown["cluster"]["maintenance_window"] == {
        "day": "sun",
        "start": "02:00",
        "duration_minutes": 240,
        "time_zone": "Asia/Tokyo",
    }
    table = ha.shown("table", "cluster", "get", "ha")
    assert fields(table)["maintenance window"] == "sun 02:00 for 240 min (Asia/Tokyo)"
    assert fields(table)["next window"].endswith("T21:00:00Z")
    removed = ha.shown("json", "cluster", "update", "ha", "--maintenance-window", "none")
    assert removed["cluster"]["maintenance_window"] is None


def test_update_refuses_a_malformed_window_before_calling_the_api(ha: Cli) -> None:
    result = ha.run("cluster", "update", "ha", "--maintenance-window", "sunday at two")
    assert result.exit_code == 2
    assert "DAY HH:MM MINUTES TIME_ZONE" in result.stderr


def test_update_shows_the_servers_reason_for_an_unknown_time_zone(ha: Cli) -> None:
    result = ha.run("cluster", "update", "ha", "--maintenance-window", "sun 02:00 240 Mars/Olympus")
    assert result.exit_code == 1
    assert "Mars/Olympus" in result.stderr


def test_operation_controls_steer_an_upgrade(ha: Cli, session_factory: sessionmaker[Session]) -> None:
    started = ha.world.call(
        "owner", "PATCH", "/v1/projects/alpha/clusters/ha", {"kubernetes_version": "1.30.2"}
    ).json()
    operation_id = started["operation"]["id"]
    set_operation(session_factory, operation_id, state="running")
    assert ha.shown("json", "operation", "pause", operation_id)["paused_reason"] == "paused by owner"
    assert ha.shown("json", "operation", "resume", operation_id)["state"] == "running"
    assert ha.shown("json", "operation", "rollback", operation_id)["rolling_back"] is True
    assert ha.shown("json", "operation", "cancel", operation_id)["cancel_requested"] is True


def test_a_control_the_state_does_not_allow_exits_1_with_the_reason(ha: Cli) -> None:
    result = ha.run("operation", "resume", ha.world.operation_id)
    assert result.exit_code == 1
    assert "only a paused operation resumes" in result.stderr


def test_operation_get_shows_per_node_progress_and_the_paused_reason(
    ha: Cli, session_factory: sessionmaker[Session]
) -> None:
    started = ha.world.call(
        "owner", "PATCH", "/v1/projects/alpha/clusters/ha", {"kubernetes_version": "1.30.2"}
    ).json()
    operation_id = started["operation"]["id"]
    nodes = [
        {"name": "ha-p1-a", "role": "worker", "pool": "p1", "version": "1.29.6", "state": "draining"},
        {"name": "ha-p1-c", "role": "worker", "pool": "p1", "version": "1.30.2", "state": "surging"},
    ]
    set_operation(
        session_factory, operation_id, state="paused", paused_reason="drain blocked by a PDB", nodes=nodes
    )
    table = ha.shown("table", "operation", "get", operation_id)
    assert fields(table)["paused_reason"] == "drain blocked by a PDB"
    found = rows(table)
    nodes_table = found[next(i for i, row in enumerate(found) if row[0] == "NODE") :]
    assert [row[0] for row in nodes_table] == ["NODE", "ha-p1-a", "ha-p1-c"]
    assert [row[-1] for row in nodes_table[1:]] == ["draining", "surging"]
    assert ha.data("operation", "get", operation_id)["nodes"] == nodes
