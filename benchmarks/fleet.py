"""Every row of issue 13's speed table in one command: each benchmark run in turn, then one summary table.

    .venv/bin/python benchmarks/fleet.py            # full size (tens of minutes)
    .venv/bin/python benchmarks/fleet.py --quick    # small sizes, under 3 minutes; CI runs it

Each benchmark is its own program with its own report (kept in the work folder printed at the end); this
one runs them as child processes with ``KAAS_BENCH_ROWS`` pointing at a file where they append their rows
(``benchmarks/_rows.py``), then prints, for every row, our figure, the baseline measured in the same run
(the apiserver directly, ``/healthz``, an anchor proxy, the old code path), their ratio, issue 13's goal and
whether this run met it, with the machine it ran on. Goals are reported, not enforced: a loaded machine
misses them without anything being broken. The command fails when a benchmark crashes or reports nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._rows import ROWS_ENV, Row, read  # noqa: E402

GOAL_MISSED = 1  # the exit status a benchmark uses for "ran, and a goal was missed"


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...]


STEPS = (
    Step(
        "the kubectl path against a real apiserver: kaas, nginx, remotedialer, direct",
        "benchmarks/k8s_path.py",
        quick=("--quick",),
        full=(),
    ),
    Step(
        "idle agent sessions per tunnel process, and their return after kill -9",
        "benchmarks/tunnel.py",
        quick=("--quick", "--only-sessions", "--sessions", "500", "--hold", "10"),
        full=("--only-sessions", "--sessions", "5000", "--hold", "30"),
    ),
    Step(
        "the API's authenticated GET under 50 connections (wrk)",
        "benchmarks/api.py",
        quick=("--quick",),
        full=(),
    ),
    Step(
        "the fleet: a reconcile sweep, and clusters created to running",
        "benchmarks/control_plane.py",
        quick=("--quick", "--workers", "2", "--request-threads", "4"),
        full=("--workers", "2", "--request-threads", "8"),
    ),
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    one, five, fifteen = os.getloadavg()
    load = f", load {one:.1f} {five:.1f} {fifteen:.1f}"
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}{load}"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> list[str]:
    out = [f"{'row':<52} {'ours':>10} {'baseline':>10} {'unit':<8} {'ratio':>7}  {'goal':<10} met"]
    for row in rows:
        ratio = row.ratio
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        out.append(
            f"{row.label[:52]:<52} {number(row.ours):>10} {number(row.baseline):>10} {row.unit[:8]:<8}"
            f" {(f'{ratio:.2f}x' if ratio is not None else '-'):>7}  {row.goal[:10]:<10} {met}"
        )
        if row.detail:
            out.append(f"    {row.detail}")
    return out


def run(*, quick: bool, only: set[str], workdir: Path) -> int:
    rows_file = workdir / "rows.jsonl"
    env = {**os.environ, ROWS_ENV: str(rows_file)}
    failures: list[str] = []
    timings: list[tuple[str, float]] = []
    print(f"kaas fleet benchmarks ({'quick' if quick else 'full'}) at {commit()} on {machine()}", flush=True)
    for step in STEPS:
        stem = Path(step.script).stem
        if only and stem not in only:
            continue
        argv = [sys.executable, str(ROOT / step.script), *(step.quick if quick else step.full)]
        log = workdir / f"{stem}.log"
        before = len(read(rows_file))
        print(f"- {step.name}: {' '.join(argv[1:])} (report: {log})", flush=True)
        started = time.monotonic()
        with log.open("w") as out:
            status = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        took = time.monotonic() - started
        timings.append((stem, took))
        recorded = len(read(rows_file)) - before
        print(f"  exit {status} after {took:.0f} s, {recorded} row(s)", flush=True)
        if status not in (0, GOAL_MISSED) or recorded == 0:
            failures.append(f"{step.script} exited {status} with {recorded} row(s); see {log}")
            print("\n".join(f"  | {line}" for line in log.read_text(errors="replace").splitlines()[-15:]))
    rows = read(rows_file)
    print()
    print("\n".join(table(rows)))
    print()
    print("time per benchmark: " + ", ".join(f"{stem} {took:.0f} s" for stem, took in timings))
    print(f"machine: {machine()}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, under 3 minutes (CI)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run only these benchmarks (k8s_path, tunnel, api, control_plane)",
    )
    parser.add_argument("--workdir", type=Path, help="where the reports go (default: a new temp folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kaas-bench-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sys.exit(run(quick=args.quick, only=set(args.only), workdir=workdir))


if __name__ == "__main__":
    main()
