"""``kaas login``: the token is checked against the API before it is saved (mode 0600)."""

from __future__ import annotations

import stat

from kaas_cli.config import CliConfig
from tests.kaas_cli.commands.conftest import API_URL, Cli


def test_login_checks_the_token_and_saves_it_for_the_next_commands(cli: Cli) -> None:
    cli.config_path.unlink()
    result = cli.ok("login", API_URL, "--token", cli.world.tokens["viewer"], "--project", "alpha")
    assert result.stdout.startswith("logged in as viewer; config saved to ")
    saved = CliConfig.load(cli.config_path)
    assert (saved.url, saved.token, saved.project) == (API_URL, cli.world.tokens["viewer"], "alpha")
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600
    assert [c["name"] for c in cli.data("cluster", "list")] == ["c1"]


def test_a_bad_token_is_not_saved(cli: Cli) -> None:
    cli.config_path.unlink()
    result = cli.run("login", API_URL, "--token", "kaas_not-a-token")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert not cli.config_path.exists()
