"""Run every benchmark and write bench-results/RESULTS.md (also printed).

Convention for benchmark scripts: each `benchmarks/bench_*.py` defines

    main(quick: bool = False) -> list[dict]

returning table rows. A row is a flat dict of JSON-able scalars; its keys become the columns of
that script's table (in first-seen order), and every number that compares against a baseline is
measured in the same run (ratios, never absolute claims from elsewhere). Rows that have a "goal"
key are goal checks, made by `_common.goal_row` (columns `_common.GOAL_COLUMNS`: goal, measured,
baseline (same run), ratio, target, met): a script adds goals by returning such rows, and every
script's goal rows end up in the one goals table that closes RESULTS.md (and in goals.json).
`quick=True` must finish in a few minutes on 2 cores. Scripts also run on their own
(`python benchmarks/bench_x.py [--quick]`). Known scripts run in ORDER; any other bench_*.py
found here (e.g. bench_embed.py) runs after them.

    python benchmarks/run_all.py [--quick] [--only topk,ann]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import GOAL_COLUMNS, is_goal, markdown_table  # noqa: E402

from xmodal.files import atomic_write_text  # noqa: E402

ORDER = ["bench_topk", "bench_ann", "bench_embed"]
OUTPUT = HERE.parent / "bench-results" / "RESULTS.md"
GOALS = OUTPUT.with_name("goals.json")


def scripts(only: list[str] | None) -> list[Path]:
    found = {p.stem: p for p in HERE.glob("bench_*.py")}
    names = [s for s in ORDER if s in found] + sorted(set(found) - set(ORDER))
    if only:
        names = [s for s in names if s.removeprefix("bench_") in only]
    return [found[s] for s in names]


def run(path: Path, quick: bool) -> tuple[list[dict], float]:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    start = time.perf_counter()
    rows = module.main(quick=quick)
    return rows, time.perf_counter() - start


def goal_rows(path: Path, rows: list[dict]) -> list[dict]:
    """The script's goal rows, checked against the goals table's columns."""
    goals = [r for r in rows if is_goal(r)]
    for row in goals:
        if list(row) != GOAL_COLUMNS:
            raise SystemExit(
                f"{path.name}: goal row {row.get('goal')!r} has columns {list(row)}, "
                f"expected {GOAL_COLUMNS} (make it with _common.goal_row)"
            )
    return goals


def machine() -> str:
    import numpy

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
        f"{numpy.__version__}; load average at start {' '.join(load)} (other work on the machine "
        "slows every method alike, so read the ratios)"
    )


def write(sections: list[str], goals: list[dict], partial: str) -> str:
    """RESULTS.md and goals.json from what has run; `partial` says how far a run got."""
    parts = [*sections, f"## Goals\n\n{markdown_table(goals)}\n"] if goals else sections
    if partial:
        parts = [*parts, f"Partial: {partial} scripts have run so far.\n"]
    text = "\n".join(parts)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUTPUT, text)
    atomic_write_text(GOALS, json.dumps(goals, indent=1))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmarks, write RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", help="comma-separated subset, e.g. topk,ann")
    args = parser.parse_args()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [f"# xmodal benchmarks ({'quick' if args.quick else 'full'} mode, {when})\n"]
    sections.append(f"Machine: {machine()}.\n")
    goals: list[dict] = []
    todo = scripts(args.only.split(",") if args.only else None)
    text = write(sections, goals, f"0 of {len(todo)}")
    for done, path in enumerate(todo, 1):
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        rows, seconds = run(path, args.quick)
        goals += goal_rows(path, rows)
        results = [r for r in rows if not is_goal(r)]
        head = f"## {path.stem} ({seconds:.0f} s, load average at its start {load})"
        sections.append(f"{head}\n\n{markdown_table(results)}\n")
        # written after every script, so a long run stopped midway keeps what it measured
        text = write(sections, goals, "" if done == len(todo) else f"{done} of {len(todo)}")
    print(text)


if __name__ == "__main__":
    main()
