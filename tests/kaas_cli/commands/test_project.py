"""``kaas project ...`` and ``kaas project quota get|set`` against the API, in every output format."""

from __future__ import annotations

import pytest

from tests.kaas_cli.commands.conftest import FORMATS, RFC3339, Cli, column, fields, rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_makes_you_the_owner(cli: Cli, fmt: str) -> None:
    shown = cli.shown(fmt, "project", "create", "beta", "--description", "team beta")
    if fmt == "table":
        assert (fields(shown)["name"], fields(shown)["role"]) == ("beta", "owner")
    else:
        assert (shown["name"], shown["description"], shown["role"]) == ("beta", "team beta", "owner")
        assert RFC3339.match(shown["created_at"])


def test_list_shows_your_projects_and_roles(cli: Cli) -> None:
    cli.login("viewer")
    projects = cli.data("project", "list")
    assert [(p["name"], p["role"]) for p in projects] == [("alpha", "viewer"), ("empty", "viewer")]
    table = cli.shown("table", "project", "list")
    assert rows(table)[0] == ["NAME", "ROLE", "DESCRIPTION", "CREATED"]
    assert column(table, "NAME") == ["alpha", "empty"]


def test_get_shows_a_project(cli: Cli) -> None:
    assert cli.data("project", "get", "alpha")["role"] == "owner"
    assert fields(cli.shown("table", "project", "get", "alpha"))["name"] == "alpha"


def test_delete_removes_an_empty_project(cli: Cli) -> None:
    assert cli.ok("project", "delete", "empty").stdout.strip() == "project empty deleted"
    assert [p["name"] for p in cli.data("project", "list")] == ["alpha"]


def test_members_add_member_and_remove_member(cli: Cli) -> None:
    members = cli.data("project", "members", "alpha")
    assert {(m["user"], m["role"]) for m in members} == {
        ("owner", "owner"),
        ("member", "member"),
        ("viewer", "viewer"),
        ("extra", "viewer"),
    }
    added = cli.data("project", "add-member", "alpha", "outsider", "--role", "viewer")
    assert (added["user"], added["role"]) == ("outsider", "viewer")
    table_says = cli.shown("table", "project", "add-member", "alpha", "outsider", "--role", "member")
    assert table_says.strip() == "outsider is member of alpha"
    table = cli.shown("table", "project", "members", "alpha")
    assert ["outsider", "member"] in [row[:2] for row in rows(table)]
    assert (
        cli.ok("project", "remove-member", "alpha", "outsider").stdout.strip()
        == "outsider removed from alpha"
    )
    assert "outsider" not in [m["user"] for m in cli.data("project", "members", "alpha")]


def test_quota_get_shows_limits_and_usage(cli: Cli) -> None:
    quota = cli.data("project", "quota", "get")
    assert quota["usage"] == {"clusters": 1, "nodes": 2, "vcpus": 4, "ram_mb": 8192}
    assert set(quota["quota"]) == {"max_clusters", "max_nodes", "max_vcpus", "max_ram_mb"}
    table = cli.shown("table", "project", "quota", "get", "alpha")
    assert rows(table)[0] == ["RESOURCE", "USED", "LIMIT"]
    assert [row[:2] for row in rows(table)[1:]] == [
        ["clusters", "1"],
        ["nodes", "2"],
        ["vcpus", "4"],
        ["ram_mb", "8192"],
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_quota_set_changes_the_limits_given_and_keeps_the_others(cli: Cli, fmt: str) -> None:
    cli.login("admin")
    cli.ok("project", "quota", "set", "alpha", "--max-vcpus", "64", "--max-ram-mb", "unlimited")
    shown = cli.shown(fmt, "project", "quota", "set", "alpha", "--max-clusters", "5", "--max-nodes", "none")
    if fmt == "table":
        assert [[row[0], row[2]] for row in rows(shown)[1:]] == [
            ["clusters", "5"],
            ["nodes", "unlimited"],
            ["vcpus", "64"],
            ["ram_mb", "unlimited"],
        ]
    else:
        assert shown["quota"] == {"max_clusters": 5, "max_nodes": None, "max_vcpus": 64, "max_ram_mb": None}
        assert shown["usage"]["clusters"] == 1


def test_quota_set_is_for_admins(cli: Cli) -> None:
    result = cli.run("project", "quota", "set", "alpha", "--max-clusters", "50")
    assert result.exit_code == 1
    assert "admin" in result.stderr
    refused = cli.run("project", "quota", "set", "alpha", "--max-clusters", "many")
    assert refused.exit_code == 2
    assert "'unlimited'" in refused.stderr
