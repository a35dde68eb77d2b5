"""`xmodal report` on the demo run, and the commands that must answer at once.

Each command runs as a user runs it, in a fresh interpreter (imports included): `xmodal report`
on the newest runs/demo-* (`make demo`), writing into bench-results/report-demo/ so the run
folder is left as it is; `xmodal --help`; and an argument error. Reports the best wall time of
the repeats and the CPU time of that run (on a loaded machine the wall time waits for the CPU;
the CPU time does not). Goals: the report in <= 10 s with its HTML <= 5 MB; --help and an
argument error in < 0.5 s each.

    python benchmarks/bench_report.py [--quick] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import goal_row, report  # noqa: E402

GOAL_REPORT_S, GOAL_HTML_MB, GOAL_ANSWER_S = 10.0, 5.0, 0.5
OUT = ROOT / "bench-results" / "report-demo" / "report.html"


def newest_demo_run() -> Path | None:
    runs = sorted((ROOT / "runs").glob("demo-*/results.json"))
    return runs[-1].parent if runs else None


def timed_command(args: list[str], expect: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m xmodal.cli ARGS` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *args], capture_output=True, text=True, env=os.environ
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != expect:
        raise RuntimeError(f"xmodal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def best(args: list[str], repeat: int, expect: int = 0) -> dict[str, Any]:
    """The fastest of `repeat` runs (the least disturbed by other load), with its CPU time."""
    wall, cpu = min(timed_command(args, expect) for _ in range(repeat))
    return {"command": f"xmodal {' '.join(args)}", "wall_s": wall, "cpu_s": cpu}


def main(quick: bool = False, run: Path | None = None) -> list[dict[str, Any]]:
    run = run or newest_demo_run()
    repeat = 1 if quick else 3
    helps = [best(["--help"], repeat), best(["report"], repeat, expect=2)]  # no RUN_DIR
    helps[1]["command"] += " (argument error)"
    answer = max(h["wall_s"] for h in helps)
    rows: list[dict[str, Any]] = [*helps]
    goals = [
        goal_row(
            f"`xmodal --help` and an argument error answer in < {GOAL_ANSWER_S} s",
            f"slowest {answer:.2f} s",
            "none: an absolute target",
            answer / GOAL_ANSWER_S,
            f"< 1 (of {GOAL_ANSWER_S} s)",
            answer < GOAL_ANSWER_S,
        )
    ]
    if run is None:
        rows.append({"command": "xmodal report", "note": "skipped: no runs/demo-* (make demo)"})
        return rows + goals
    made = best(["report", str(run), "--out", str(OUT)], repeat)
    made["html_MB"] = OUT.stat().st_size / 1e6
    made["command"] = f"xmodal report runs/{run.name}"
    rows.append(made)
    goals += [
        goal_row(
            f"`xmodal report` on the demo run in <= {GOAL_REPORT_S:g} s",
            f"{made['wall_s']:.1f} s (CPU {made['cpu_s']:.1f} s)",
            "none: an absolute target",
            made["wall_s"] / GOAL_REPORT_S,
            f"<= 1 (of {GOAL_REPORT_S:g} s)",
            made["wall_s"] <= GOAL_REPORT_S,
        ),
        goal_row(
            f"demo report HTML <= {GOAL_HTML_MB:g} MB",
            f"{made['html_MB']:.2f} MB",
            "none: an absolute target",
            made["html_MB"] / GOAL_HTML_MB,
            f"<= 1 (of {GOAL_HTML_MB:g} MB)",
            made["html_MB"] <= GOAL_HTML_MB,
        ),
    ]
    return rows + goals


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, not three")
    parser.add_argument("--run", type=Path, help="the demo run (default: newest runs/demo-*)")
    args = parser.parse_args()
    print(report(main(args.quick, args.run)))
