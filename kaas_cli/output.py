"""Everything the CLI prints or writes: tables for people, JSON and YAML for programs, files with mode 0600.

Every command that prints data takes ``-o/--output table|json|yaml`` (``kaas_cli.commands.common``) and
prints through ``print_rows`` (a list) or ``print_object`` (one thing). Times are rendered one way whatever
the API sent (``+00:00`` or ``Z``, with or without a zone, which SQLite drops): RFC 3339 in UTC with ``Z``;
tables round them to the second. Values go into tables as plain text, never as rich markup: a label value
``[red]x`` is shown as it is.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def is_time_key(key: str) -> bool:
    """The API's time fields: ``created_at``, ``last_transition_time``, a delivery attempt's ``at``."""
    return key == "at" or key.endswith(("_at", "_time"))


def parse_time(value: Any) -> datetime | None:
    """A time the API sent, in UTC; a time without a zone is UTC (kaas stores UTC). None if not a time."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def rfc3339(moment: datetime, *, seconds: bool = False) -> str:
    """``2026-01-01T12:00:00.250000Z``; with ``seconds``, ``2026-01-01T12:00:00Z``."""
    moment = moment.astimezone(UTC)
    if seconds:
        moment = moment.replace(microsecond=0)
    return moment.replace(tzinfo=None).isoformat() + "Z"


def normalized(data: Any) -> Any:
    """``data`` with every time field rendered in RFC 3339 UTC with ``Z`` (other values as they are)."""
    if isinstance(data, dict):
        result: dict[str, Any] = {}
        for key, value in data.items():
            moment = parse_time(value) if is_time_key(str(key)) else None
            result[key] = rfc3339(moment) if moment is not None else normalized(value)
        return result
    if isinstance(data, list):
        return [normalized(item) for item in data]
    return data


def print_data(data: Any, fmt: OutputFormat) -> None:
    """``data`` as JSON or YAML on stdout (plain print: rich would wrap long lines and break parsers)."""
    data = normalized(data)
    if fmt is OutputFormat.YAML:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    else:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], fmt: OutputFormat) -> None:
    """``rows`` as a table of ``columns`` ((dotted key, heading) pairs), or as a JSON or YAML list."""
    if fmt is not OutputFormat.TABLE:
        print_data(list(rows), fmt)
        return
    table = Table(show_edge=False, header_style="bold")
    for _key, heading in columns:
        table.add_column(heading)
    for row in rows:
        table.add_row(*(Text(cell(row, key)) for key, _heading in columns))
    console.print(table)


def print_object(data: dict[str, Any], fmt: OutputFormat) -> None:
    """One object: a two-column table of its fields, or JSON or YAML."""
    if fmt is not OutputFormat.TABLE:
        print_data(data, fmt)
        return
    table = Table(show_header=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(Text(str(key)), Text(show(value, key=str(key))))
    console.print(table)


def cell(row: dict[str, Any], dotted_key: str) -> str:
    """The text of ``row``'s field at ``dotted_key`` (``node_counts.ready``) in a table."""
    value: Any = row
    for part in dotted_key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return show(value, key=dotted_key.rsplit(".", 1)[-1])


def show(value: Any, *, key: str = "") -> str:
    """A value as a table shows it: ``-`` for nothing, times to the second, lists and maps as JSON."""
    if value is None:
        return "-"
    moment = parse_time(value) if is_time_key(key) else None
    if moment is not None:
        return rfc3339(moment, seconds=True)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(normalized(value), default=str)
    return str(value)


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds credentials), replacing it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # O_CREAT's mode applies only to a new file
