"""``kaas cluster node-pool list|get|add|set|delete`` against the API, in every output format; labels and
taints written as ``kubectl label`` and ``kubectl taint`` write them."""

from __future__ import annotations

import pytest
import typer

from kaas_cli.commands.node_pool import apply_labels, apply_taints
from tests.kaas_cli.commands.conftest import FORMATS, RFC3339_SECONDS, Cli, body_rows, fields, rows

WEB_TAINT = {"key": "dedicated", "value": "web", "effect": "NoSchedule"}


def test_list_shows_every_pool_with_flavor_count_labels_and_taints(cli: Cli) -> None:
    cli.ok(
        "cluster",
        "node-pool",
        "add",
        "c1",
        "web",
        "--flavor",
        "large",
        "--count",
        "2",
        "--label",
        "tier=web",
        "--taint",
        "dedicated=web:NoSchedule",
    )
    pools = cli.data("cluster", "node-pool", "list", "c1")
    assert [(p["name"], p["flavor"], p["count"]) for p in pools] == [("p1", "small", 1), ("web", "large", 2)]
    assert (pools[1]["labels"], pools[1]["taints"]) == ({"tier": "web"}, [WEB_TAINT])
    table = cli.shown("table", "cluster", "node-pool", "list", "c1")
    assert rows(table)[0] == ["NAME", "FLAVOR", "COUNT", "VERSION", "LABELS", "TAINTS", "CREATED"]
    web = body_rows(table)[1]
    assert web[:6] == [
        "web",
        "large",
        "2",
        "1.30.2",
        '{"tier": "web"}',
        '[{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]',
    ]
    assert RFC3339_SECONDS.match(web[6])


def test_get_shows_one_pool(cli: Cli) -> None:
    pool = cli.data("cluster", "node-pool", "get", "c1", "p1")
    assert (pool["name"], pool["flavor"], pool["count"]) == ("p1", "small", 1)
    table = cli.shown("table", "cluster", "node-pool", "get", "c1", "p1")
    assert {k: fields(table)[k] for k in ("name", "flavor", "count", "labels")} == {
        "name": "p1",
        "flavor": "small",
        "count": "1",
        "labels": "{}",
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_add_creates_a_pool_with_labels_and_taints(cli: Cli, fmt: str) -> None:
    shown = cli.shown(
        fmt,
        "cluster",
        "node-pool",
        "add",
        "c1",
        "web",
        "--flavor",
        "large",
        "--count",
        "2",
        "-l",
        "tier=web",
        "-t",
        "dedicated=web:NoSchedule",
        "-t",
        "gpu:NoExecute",
    )
    taints = [WEB_TAINT, {"key": "gpu", "value": "", "effect": "NoExecute"}]
    if fmt == "table":
        assert fields(shown)["name"] == "web"
        assert fields(shown)["labels"] == '{"tier": "web"}'
        assert "node pool web added, operation" in cli.runs[-1].stderr
    else:
        assert (shown["node_pool"]["name"], shown["node_pool"]["taints"]) == ("web", taints)
        assert shown["operation"]["kind"] == "update"
    stored = cli.data("cluster", "node-pool", "get", "c1", "web")
    assert (stored["count"], stored["labels"], stored["taints"]) == (2, {"tier": "web"}, taints)


@pytest.mark.parametrize("fmt", FORMATS)
def test_set_changes_count_labels_and_taints_and_keeps_the_rest(cli: Cli, fmt: str) -> None:
    cli.ok(
        "cluster",
        "node-pool",
        "add",
        "c1",
        "web",
        "--flavor",
        "large",
        "-l",
        "tier=web",
        "-l",
        "team=a",
        "-t",
        "dedicated=web:NoSchedule",
        "-t",
        "gpu:NoExecute",
    )
    shown = cli.shown(
        fmt,
        "cluster",
        "node-pool",
        "set",
        "c1",
        "web",
        "--count",
        "3",
        "-l",
        "tier-",
        "-l",
        "zone=z1",
        "-t",
        "gpu-",
    )
    if fmt == "table":
        assert fields(shown)["count"] == "3"
        assert "node pool web changed, operation" in cli.runs[-1].stderr
    else:
        assert shown["node_pool"]["count"] == 3
    stored = cli.data("cluster", "node-pool", "get", "c1", "web")
    assert (stored["count"], stored["labels"], stored["taints"]) == (
        3,
        {"team": "a", "zone": "z1"},
        [WEB_TAINT],
    )


def test_set_with_nothing_to_change_is_refused(cli: Cli) -> None:
    result = cli.run("cluster", "node-pool", "set", "c1", "p1")
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_delete_removes_the_pool(cli: Cli, fmt: str) -> None:
    cli.ok("cluster", "node-pool", "add", "c1", "web", "--flavor", "large")
    shown = cli.shown(fmt, "cluster", "node-pool", "delete", "c1", "web")
    if fmt == "table":
        assert shown == ""
        assert "node pool web deleted, operation" in cli.runs[-1].stderr
    else:
        assert shown["node_pool"] is None
        assert shown["operation"]["kind"] == "update"
    assert [p["name"] for p in cli.data("cluster", "node-pool", "list", "c1")] == ["p1"]


def test_labels_are_set_and_removed_in_order() -> None:
    assert apply_labels({"a": "1", "b": "2"}, ["a-", "c=3", "b=", "c-", "c=4"]) == {"b": "", "c": "4"}
    with pytest.raises(typer.BadParameter):
        apply_labels({}, ["no-equals-sign"])


def test_taints_are_added_replaced_by_key_and_effect_and_removed() -> None:
    start = [WEB_TAINT, {"key": "gpu", "value": "", "effect": "NoExecute"}]
    assert apply_taints(start, ["dedicated=api:NoSchedule", "gpu:NoExecute-", "x:PreferNoSchedule"]) == [
        {"key": "dedicated", "value": "api", "effect": "NoSchedule"},
        {"key": "x", "value": "", "effect": "PreferNoSchedule"},
    ]
    assert apply_taints(start, ["dedicated-"]) == [start[1]]
    with pytest.raises(typer.BadParameter):
        apply_taints([], ["no-effect"])
