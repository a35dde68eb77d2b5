"""Where configs/paper.yaml's time goes, and the least time its fits need on this machine.

A run of paper.yaml spends nearly all of its time fitting (bench_study.py: the fits' seconds
over the jobs against the wall time). A trained aligner's fit is matrix products (forward and
backward passes) plus everything else (dropout masks, norms, the optimiser, validation). For
one fit of each aligner kind in the config (its first grid setting, its first metric, seed 0,
on the config's split, one thread as the runner runs it) this measures the fit's time, the
floating-point work of its matrix products (torch profiler, `with_flops`; the closed-form
aligners' numpy products are not counted, so their share reads 0 and the floor stays a lower
bound) and the single-thread SGEMM rate at the largest training product (256 x 1280 x 512),
in this run. `matmul share` = that work at that rate over the fit's time: the part that no
removal of overhead can touch. With a finished run of the config (--run, default the newest
runs/paper-*), each kind's fit seconds there (main and fold fits) times its share, summed and
spread over the config's jobs, is the time its matrix products alone need: the floor.

    python benchmarks/profile_study.py [--config configs/paper.yaml] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _common import markdown_table
from bench_study import PAPER, ROOT, fit_seconds
from threadpoolctl import threadpool_limits

SHAPE = (256, 1280, 512)


def sgemm_rate(repeat: int = 50) -> float:
    """GFLOP/s of one thread on the largest product a fit makes (the best of `repeat`)."""
    m, k, n = SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def one_fit_per_kind(config: Path) -> list[dict[str, Any]]:
    from xmodal.api import load
    from xmodal.experiments.runner import fit_aligner, prepare
    from xmodal.store import EmbeddingStore

    cfg = load(config)
    prep = next(prepare(cfg, EmbeddingStore(cfg.cache_dir), False))
    firsts: dict[str, Any] = {}
    for entry in cfg.aligners:
        firsts.setdefault(entry.kind, entry.expand()[0])
    rate = sgemm_rate()
    rows = []
    for kind, acfg in firsts.items():
        metric = str((acfg.metrics or cfg.metrics)[0])

        def fit(acfg=acfg, metric=metric) -> None:
            fit_aligner(acfg, metric, 0, prep.splits, False, prep.encoder, cfg.ks, cfg.primary)

        t = time.perf_counter()
        fit()
        seconds = time.perf_counter() - t
        with torch.profiler.profile(with_flops=True) as prof:
            fit()
        flops = sum(e.flops or 0 for e in prof.key_averages())
        rows.append(
            {"kind": kind, "fitted": acfg.label, "fit_s": seconds, "matmul GFLOP": flops / 1e9,
             "matmul_s at SGEMM": flops / 1e9 / rate,
             "matmul share": min(1.0, flops / 1e9 / rate / seconds), "SGEMM GFLOP/s": rate}
        )  # fmt: skip
    return rows


def floor(rows: list[dict[str, Any]], run: Path, jobs: int) -> list[dict[str, Any]]:
    """Each kind's fit seconds in the run, and the part of them its matrix products need."""
    main_fits, fold_fits = fit_seconds(run)
    share = {r["kind"]: r["matmul share"] for r in rows}
    out = []
    for kind in sorted(main_fits | fold_fits, key=lambda k: -(main_fits[k] + fold_fits[k])):
        spent = main_fits[kind] + fold_fits[kind]
        out.append({"kind": kind, "fit_s in the run": spent, "matmul_s": spent * share[kind]})
    total = sum(r["fit_s in the run"] for r in out)
    matmul = sum(r["matmul_s"] for r in out)
    out.append(
        {"kind": f"all, over {jobs} jobs (minutes)", "fit_s in the run": total / jobs / 60,
         "matmul_s": matmul / jobs / 60}
    )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=PAPER)
    parser.add_argument("--run", type=Path, help="a finished run of the config")
    args = parser.parse_args()
    from xmodal.api import load

    runs = sorted((ROOT / "runs").glob(f"{load(args.config).name}-*/run.json"))
    run = args.run or (runs[-1].parent if runs else None)
    with threadpool_limits(1):
        rows = one_fit_per_kind(args.config)
    print(markdown_table(rows))
    if run is not None:
        print(f"\nFit seconds of {run}:\n")
        print(markdown_table(floor(rows, run, load(args.config).jobs)))


if __name__ == "__main__":
    main()
