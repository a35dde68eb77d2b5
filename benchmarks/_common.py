"""Helpers shared by the benchmark scripts: synthetic data, per-case subprocesses, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def gaussian(n: int, d: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """n x d float32 N(0, 1), generated in chunks so no float64 copy of the whole matrix exists."""
    out = np.empty((n, d), np.float32)
    rng = np.random.default_rng(seed)
    for s in range(0, n, chunk):
        rng.standard_normal(out=out[s : s + chunk], dtype=np.float32)
    return out


def peak_rss_mb() -> float:
    """High-water resident memory of this process image (VmHWM: sees BLAS and numba buffers, unlike
    tracemalloc; unlike ru_maxrss it does not inherit the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """Fastest of `repeat` runs: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_case(script: str | Path, case: dict[str, Any]) -> dict[str, Any]:
    """Run `script --case JSON` in a fresh interpreter (own peak memory); read its JSON line."""
    proc = subprocess.run(
        [sys.executable, str(script), "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table; columns are the keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


#: the goals table's columns, in order; `goal_row` makes its rows
GOAL_COLUMNS = ["goal", "measured", "baseline (same run)", "ratio", "target", "met"]


def goal_row(
    goal: str, measured: str, baseline: str, ratio: float, target: str, met: bool
) -> dict[str, Any]:
    """One row of the goals table: what was measured, against what in the same run, the ratio
    the target is stated in (e.g. ">= 0.80"), and whether it was met."""
    values = [goal, measured, baseline, ratio, target, "yes" if met else "no"]
    return dict(zip(GOAL_COLUMNS, values, strict=True))


def is_goal(row: dict[str, Any]) -> bool:
    return "goal" in row


def report(rows: list[dict[str, Any]]) -> str:
    """Measurement rows, then goal rows (those with a "goal" key), as two Markdown tables."""
    results = [r for r in rows if not is_goal(r)]
    goals = [r for r in rows if is_goal(r)]
    return markdown_table(results) + ("\n\n" + markdown_table(goals) if goals else "")


def case_cli(
    doc: str,
    main: Callable[[bool], list[dict[str, Any]]],
    run_one: Callable[[dict[str, Any]], dict[str, Any]],
    quick_help: str,
) -> None:
    """The command line of a bench script whose cases run in subprocesses (see run_case):
    `--case JSON` measures one case and prints it as JSON; otherwise the whole table."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one measurement, JSON
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_one(json.loads(args.case))))
        return
    print(report(main(args.quick)))
