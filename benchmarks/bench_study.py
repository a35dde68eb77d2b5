"""`xmodal run configs/paper.yaml` with the embeddings cached, and where its time goes.

The embeddings are computed (or found in the cache) before the clock starts, as the goal says
"with cached embeddings"; the run itself is `xmodal run` in a fresh interpreter, as a user runs
it. Beside the wall time, the same run's fit times (`fit_seconds` of every main and fold fit)
are summed by aligner kind: their sum over the run's job count is the wall time the fits alone
need when both jobs are always busy (the baseline of the goal row), so the ratio says how much
of the wall time is anything but fitting. Goal: at most 6 minutes on 2 cores.

Quick mode runs configs/demo.yaml instead and checks no goal.

    python benchmarks/bench_study.py [--quick] [--config configs/paper.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import goal_row, report  # noqa: E402

GOAL_MINUTES = 6.0
PAPER, DEMO = ROOT / "configs" / "paper.yaml", ROOT / "configs" / "demo.yaml"


def warm_cache(config: Path) -> float:
    """Embed every dataset x encoder pair of the config into its cache (seconds taken)."""
    from xmodal.api import load
    from xmodal.experiments.runner import prepare
    from xmodal.store import EmbeddingStore

    cfg = load(config)
    t = time.perf_counter()
    for _ in prepare(cfg, EmbeddingStore(cfg.cache_dir), progress=False):
        pass
    return time.perf_counter() - t


def timed_run(config: Path, out: Path) -> tuple[float, Path]:
    """Wall seconds of `xmodal run CONFIG --out OUT --quiet`, and the run folder it made."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", "run", str(config), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"xmodal run {config} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    (folder,) = [p.parent for p in out.glob("*/run.json")]
    return wall, folder


def fit_seconds(folder: Path) -> tuple[Counter[str], Counter[str]]:
    """Seconds spent fitting, by aligner kind: main fits, and cross-validation fold fits."""
    sums: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    for total, name in zip(sums, ("rows.jsonl", "folds.jsonl"), strict=True):
        path = folder / name
        for line in path.read_text().splitlines() if path.is_file() else []:
            row = json.loads(line)["row"]
            total[row["kind"]] += row.get("fit_seconds") or 0.0
    return sums


def main(quick: bool = False, config: Path | None = None) -> list[dict[str, Any]]:
    config = config or (DEMO if quick else PAPER)
    cached_s = warm_cache(config)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench-results") as tmp:
        wall, folder = timed_run(config, Path(tmp))
        main_fits, fold_fits = fit_seconds(folder)
    jobs = _config_jobs(config)
    fitting = sum(main_fits.values()) + sum(fold_fits.values())
    rows: list[dict[str, Any]] = [
        {"case": f"xmodal run {config.relative_to(ROOT)}, embeddings cached "
                 f"(warming took {cached_s:.0f} s, before the clock)",
         "wall_s": wall, "fit_s (sum)": fitting, "jobs": jobs,
         "fit_s / jobs": fitting / jobs, "other_s": wall - fitting / jobs}
    ]  # fmt: skip
    for kind in sorted(main_fits | fold_fits, key=lambda k: -(main_fits[k] + fold_fits[k])):
        rows.append(
            {"case": f"  fits of {kind}", "fit_s (sum)": main_fits[kind] + fold_fits[kind],
             "main_s": main_fits[kind], "fold_s": fold_fits[kind]}
        )  # fmt: skip
    if quick:
        return rows
    minutes = wall / 60
    rows.append(
        goal_row(
            f"`xmodal run configs/paper.yaml`, embeddings cached, <= {GOAL_MINUTES:g} min",
            f"{minutes:.1f} min",
            f"fits alone, {jobs} jobs always busy: {fitting / jobs / 60:.1f} min",
            minutes / GOAL_MINUTES,
            f"<= 1 (of {GOAL_MINUTES:g} min)",
            minutes <= GOAL_MINUTES,
        )
    )
    return rows


def _config_jobs(config: Path) -> int:
    from xmodal.api import load

    return load(config).jobs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="configs/demo.yaml, no goal")
    parser.add_argument("--config", type=Path, help="another config to time")
    args = parser.parse_args()
    print(report(main(args.quick, args.config.resolve() if args.config else None)))
