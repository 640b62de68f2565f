"""Rendering for people (rich tables) and for programs (``--output json``)."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


def print_json(data: Any) -> None:
    # plain print: rich would wrap long lines and break machine parsing
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], fmt: OutputFormat) -> None:
    """Print ``rows`` as a table of ``columns`` ((key, heading) pairs), or as JSON."""
    if fmt is OutputFormat.JSON:
        print_json(list(rows))
        return
    table = Table(show_edge=False, header_style="bold")
    for _key, heading in columns:
        table.add_column(heading)
    for row in rows:
        table.add_row(*(_cell(row, key) for key, _heading in columns))
    console.print(table)


def print_object(data: dict[str, Any], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.JSON:
        print_json(data)
        return
    table = Table(show_header=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, _format(value))
    console.print(table)


def _cell(row: dict[str, Any], dotted_key: str) -> str:
    value: Any = row
    for part in dotted_key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return _format(value)


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)
