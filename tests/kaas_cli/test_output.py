"""One rendering of times whatever the API sent: RFC 3339 in UTC with ``Z`` (tables: to the second); table
cells are plain text, never rich markup."""

from __future__ import annotations

import json

import pytest
import yaml

from kaas_cli.output import OutputFormat, normalized, print_data, print_rows, show


@pytest.mark.parametrize(
    ("sent", "rendered"),
    [
        ("2026-03-04T05:06:07.123456+00:00", "2026-03-04T05:06:07.123456Z"),
        ("2026-03-04T05:06:07.123456Z", "2026-03-04T05:06:07.123456Z"),
        ("2026-03-04T05:06:07", "2026-03-04T05:06:07Z"),  # SQLite drops the zone: kaas stores UTC
        ("2026-03-04T07:06:07+02:00", "2026-03-04T05:06:07Z"),
    ],
)
def test_every_form_of_a_time_is_rendered_in_utc_with_z(sent: str, rendered: str) -> None:
    assert normalized({"created_at": sent, "attempts": [{"at": sent}]}) == {
        "created_at": rendered,
        "attempts": [{"at": rendered}],
    }
    assert show(sent, key="created_at") == rendered[:19] + "Z"


def test_only_time_fields_are_touched() -> None:
    data = {"name": "2026-03-04T05:06:07", "expires_at": None, "last_transition_time": "not a time"}
    assert normalized(data) == data
    assert show(None, key="expires_at") == "-"


@pytest.mark.parametrize("fmt", [OutputFormat.JSON, OutputFormat.YAML])
def test_json_and_yaml_carry_the_same_normalized_data(
    fmt: OutputFormat, capsys: pytest.CaptureFixture[str]
) -> None:
    print_data([{"id": "x", "created_at": "2026-03-04T05:06:07+00:00", "labels": {"a": "b"}}], fmt)
    out = capsys.readouterr().out
    parsed = json.loads(out) if fmt is OutputFormat.JSON else yaml.safe_load(out)
    assert parsed == [{"id": "x", "created_at": "2026-03-04T05:06:07Z", "labels": {"a": "b"}}]


def test_a_table_shows_values_as_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    print_rows([{"name": "[bold]x[/bold]", "ok": True}], [("name", "NAME"), ("ok", "OK")], OutputFormat.TABLE)
    out = capsys.readouterr().out
    assert "[bold]x[/bold]" in out
    assert "yes" in out
