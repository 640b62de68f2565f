"""``kaas cluster create|list|get|scale|delete|nodes`` against the API, in every output format."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Node, NodePool, utcnow
from tests.kaas_cli.commands.conftest import FORMATS, RFC3339, RFC3339_SECONDS, Cli, column, fields, rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_prints_the_accepted_cluster_and_its_pools(cli: Cli, fmt: str) -> None:
    args = ("cluster", "create", "c2", "--control-plane-flavor", "small", "--pool", "web:large:2")
    shown = cli.shown(fmt, *args)
    if fmt == "table":
        summary = fields(shown)
        assert (summary["name"], summary["region"], summary["phase"]) == ("c2", "r1", "provisioning")
        assert summary["control plane"] == "1 x small"
        assert RFC3339_SECONDS.match(summary["created"])
        assert ["web", "large", "2", "1.30.2", "{}", "[]"] in rows(shown)
        assert "cluster c2 accepted, operation" in cli.runs[-1].stderr
    else:
        assert shown["cluster"]["name"] == "c2"
        assert [(p["name"], p["flavor"], p["count"]) for p in shown["cluster"]["node_pools"]] == [
            ("web", "large", 2)
        ]
        assert (shown["operation"]["kind"], shown["operation"]["state"]) == ("create", "pending")
        assert RFC3339.match(shown["cluster"]["created_at"])


def test_list_shows_each_cluster_with_its_phase_and_node_counts(cli: Cli) -> None:
    listed = cli.data("cluster", "list")
    assert [(c["name"], c["phase"]) for c in listed] == [("c1", "provisioning")]
    assert listed[0]["node_counts"] == {"desired": 2, "observed": 0, "ready": 0}
    table = cli.shown("table", "cluster", "list")
    assert rows(table)[0] == ["NAME", "REGION", "VERSION", "PHASE", "READY", "NODES", "DESIRED", "CREATED"]
    assert rows(table)[1][:7] == ["c1", "r1", "1.30.2", "provisioning", "0", "0", "2"]
    assert RFC3339_SECONDS.match(column(table, "CREATED")[0])


def test_get_shows_the_cluster_with_its_pools(cli: Cli) -> None:
    cluster = cli.data("cluster", "get", "c1")
    assert (cluster["id"], cluster["project"], cluster["kubernetes_version"]) == (
        cli.world.cluster_id,
        "alpha",
        "1.30.2",
    )
    table = cli.shown("table", "cluster", "get", "c1")
    assert fields(table)["id"] == cli.world.cluster_id
    assert fields(table)["nodes"] == "0 ready, 0 of 2 built"
    assert ["p1", "small", "1", "1.30.2", "{}", "[]"] in rows(table)


@pytest.mark.parametrize("fmt", FORMATS)
def test_scale_sets_the_pool_count(cli: Cli, fmt: str) -> None:
    shown = cli.shown(fmt, "cluster", "scale", "c1", "p1", "3")
    if fmt == "table":
        assert shown.strip() == "node pool p1 → 3"
    else:
        assert (shown["node_pool"]["name"], shown["node_pool"]["count"]) == ("p1", 3)
        assert shown["operation"]["kind"] == "update"
    assert cli.data("cluster", "node-pool", "get", "c1", "p1")["count"] == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_delete_accepts_the_deletion(cli: Cli, fmt: str) -> None:
    shown = cli.shown(fmt, "cluster", "delete", "c1")
    if fmt == "table":
        assert shown == ""  # without --wait: only the acceptance, on stderr
        assert "deletion of c1 accepted, operation" in cli.runs[-1].stderr
    else:
        assert shown["cluster"]["phase"] == "deleting"
        assert shown["operation"]["kind"] == "delete"
    assert cli.data("cluster", "get", "c1")["phase"] == "deleting"


def test_nodes_lists_the_cluster_servers_with_role_pool_and_readiness(
    cli: Cli, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session, session.begin():  # the rows the provider writes
        pool = session.query(NodePool).filter_by(cluster_id=cli.world.cluster_id).one()
        at = utcnow() - timedelta(minutes=5)
        session.add_all(
            [
                Node(
                    cluster_id=cli.world.cluster_id,
                    role="control-plane",
                    name="c1-cp-0",
                    flavor="small",
                    status="ACTIVE",
                    address="10.0.0.5",
                    ready=True,
                    created_at=at,
                ),
                Node(
                    cluster_id=cli.world.cluster_id,
                    node_pool_id=pool.id,
                    role="worker",
                    name="c1-p1-0",
                    flavor="small",
                    status="BUILD",
                    created_at=at,
                ),
            ]
        )
    nodes = cli.data("cluster", "nodes", "c1")
    assert [(n["name"], n["role"], n["node_pool"], n["ready"]) for n in nodes] == [
        ("c1-cp-0", "control-plane", None, True),
        ("c1-p1-0", "worker", "p1", False),
    ]
    assert all(RFC3339.match(n["created_at"]) for n in nodes)
    table = cli.shown("table", "cluster", "nodes", "c1")
    assert [row[:7] for row in rows(table)] == [
        ["NAME", "ROLE", "POOL", "FLAVOR", "STATUS", "READY", "ADDRESS"],
        ["c1-cp-0", "control-plane", "-", "small", "ACTIVE", "yes", "10.0.0.5"],
        ["c1-p1-0", "worker", "p1", "small", "BUILD", "no", "-"],
    ]
    assert column(table, "CREATED") == [(at.replace(microsecond=0)).strftime("%Y-%m-%dT%H:%M:%SZ")] * 2


def test_a_refusal_of_the_api_is_one_line_on_stderr_and_exit_code_1(cli: Cli) -> None:
    cli.login("viewer")
    result = cli.run("cluster", "delete", "c1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "member" in result.stderr  # the server's reason: a viewer is not a member
    assert result.stdout == ""
