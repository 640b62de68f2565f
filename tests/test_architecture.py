"""The map in docs/architecture.md is checked against the code, not kept by hand.

The "Packages and who owns what" table says which first-party packages each package may import; this
reads the imports the code really has (grimp, the graph import-linter builds) and fails when the table and
the code disagree in either direction. It also keeps the import-linter contract that fences the agent off
the server side complete: it names every module of ``agents`` outside ``agents.tunnel``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kaas_core", "kaas_api", "provider", "kaas_tunnel", "kaas_cli", "agents", "simcloud", "nodesim")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # a table cell may hold an escaped \|


def documented() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Packages and who owns what", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = CELL_SEPARATOR.split(line)
        if len(cells) != 5:  # | package | owns | may import |
            continue
        named = re.match(r"\s*`([a-z_]+)/`", cells[1])
        if named and named.group(1) in PACKAGES:
            rows[named.group(1)] = set(re.findall(r"`([a-z_]+)`", cells[3])) & set(PACKAGES)
    return rows


def actual() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES)
    imports: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for package in PACKAGES:
        for module in graph.find_descendants(package) | {package}:
            for imported in graph.find_modules_directly_imported_by(module):
                top = imported.split(".", 1)[0]
                if top in PACKAGES and top != package:
                    imports[package].add(top)
    return imports


def test_the_architecture_tables_imports_are_the_codes() -> None:
    table = documented()
    assert set(table) == set(PACKAGES), "every package has a row"
    assert actual() == table


def test_the_contract_fencing_off_the_agent_names_every_agent_module_outside_the_tunnel_package() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    fence = next(c for c in contracts if c["name"].startswith("The server side uses the agent's tunnel"))
    graph = grimp.build_graph("agents")
    modules = {m for m in graph.find_descendants("agents") if m.split(".")[:2] != ["agents", "tunnel"]}
    assert set(fence["forbidden_modules"]) == modules
