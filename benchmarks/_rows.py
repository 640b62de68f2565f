"""The figures a benchmark hands to ``benchmarks/fleet.py``: one JSON line per row of issue 13's table.

Each benchmark prints its own report for people, and, when ``KAAS_BENCH_ROWS`` names a file (fleet.py sets
it for every benchmark it runs), also appends its rows there with ``record``. A row carries our figure, the
baseline measured in the same run and their ratio, so the summary table needs no knowledge of how each was
measured; ``goal`` and ``met`` say what issue 13 asks and whether this run reached it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ROWS_ENV = "KAAS_BENCH_ROWS"


@dataclass(frozen=True)
class Row:
    key: str  # stable name of the table's row, e.g. "k8s.get.p50"
    label: str  # what was measured, for people
    ours: float
    baseline: float | None  # the same figure of the baseline (direct, /healthz, the old path), same run
    unit: str
    goal: str  # issue 13's goal, e.g. "≤ 2x"
    met: bool | None  # None: informational (an anchor's row)
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline


def record(*rows: Row) -> None:
    """Append the rows to ``$KAAS_BENCH_ROWS`` when it is set; a benchmark run alone records nothing."""
    target = os.environ.get(ROWS_ENV)
    if not target:
        return
    with Path(target).open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({**asdict(row), "ratio": row.ratio}) + "\n")


def read(path: Path) -> list[Row]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            fields = json.loads(line)
            fields.pop("ratio", None)
            rows.append(Row(**fields))
    return rows
