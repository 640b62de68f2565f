"""``kaas api-token list|create|revoke``: your API tokens, in every output format."""

from __future__ import annotations

import pytest

from tests.kaas_api.conftest import bearer
from tests.kaas_cli.commands.conftest import FORMATS, RFC3339_SECONDS, Cli, column, fields, rows


def test_list_shows_your_tokens_by_prefix_only(cli: Cli) -> None:
    tokens = cli.data("api-token", "list")
    assert [t["description"] for t in tokens] == ["first token", "spare"]
    assert cli.world.tokens["owner"].startswith(tokens[0]["prefix"])
    assert cli.world.tokens["owner"] not in str(tokens)
    table = cli.shown("table", "api-token", "list")
    assert rows(table)[0] == ["ID", "PREFIX", "DESCRIPTION", "CREATED", "EXPIRES", "REVOKED", "LAST USED"]
    assert column(table, "DESCRIPTION") == ["first token", "spare"]
    assert column(table, "EXPIRES")[0] == "-"  # the first token never expires
    assert RFC3339_SECONDS.match(column(table, "EXPIRES")[1])
    assert cli.world.tokens["owner"] not in table


def test_an_admin_lists_another_user_tokens(cli: Cli) -> None:
    cli.login("admin")
    assert [t["description"] for t in cli.data("api-token", "list", "--user", "viewer")] == [
        "first token",
        "spare",
    ]
    cli.login("member")
    refused = cli.run("api-token", "list", "--user", "viewer")
    assert refused.exit_code == 1
    assert "only admins" in refused.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_prints_the_new_token_once_and_it_works(cli: Cli, fmt: str) -> None:
    shown = cli.shown(fmt, "api-token", "create", "--description", "ci", "--ttl-days", "7")
    if fmt == "table":
        assert fields(shown)["description"] == "ci"
        token = shown.strip().splitlines()[-1]
        assert "shown only this once" in cli.runs[-1].stderr
    else:
        assert shown["info"]["description"] == "ci"
        token = shown["token"]
    assert token.startswith("kaas_")
    me = cli.world.client.get("/v1/me", headers=bearer(token))
    assert (me.status_code, me.json()["name"]) == (200, "owner")


def test_revoke_stops_the_token_at_once(cli: Cli) -> None:
    created = cli.shown("json", "api-token", "create", "--description", "old")
    token_id = created["info"]["id"]
    result = cli.ok("api-token", "revoke", token_id)
    assert result.stdout.strip() == f"API token {token_id} revoked"
    assert "warning" not in result.stderr
    [revoked] = [t for t in cli.data("api-token", "list") if t["id"] == token_id]
    assert revoked["revoked_at"] is not None
    assert cli.world.client.get("/v1/me", headers=bearer(created["token"])).status_code == 401


def test_revoking_the_token_the_cli_uses_warns(cli: Cli) -> None:
    [own] = [t for t in cli.data("api-token", "list") if cli.world.tokens["owner"].startswith(t["prefix"])]
    result = cli.ok("api-token", "revoke", own["id"])
    assert "the token this CLI uses" in result.stderr
    assert cli.run("api-token", "list").exit_code == 1
