"""Scale-out: the Ray executor's overhead on one machine, and index builds in bounded memory.

1. The same Tux Paint images embedded by `local` and by `ray` (actors = CPUs, one core each) in
   one run: wall time of each, model loading included (once for local, once per actor, in
   parallel, for ray; Ray itself is started before the clock) and their ratio.
   Goal: ray / local <= 1.15.
2. Indexes built from blocks with `xmodal.retrieval.sharded_index` under a fixed memory budget,
   at two sizes of synthetic clustered vectors (bench_ann's generator, cosine): build time,
   peak RSS of the process (each size in a fresh interpreter) and recall@10 against exact
   search. Peak RSS must stay flat as n grows ten-fold. Plus the real vectors: the Tux Paint
   images just embedded, aligned by ridge regression, both directions.

    python benchmarks/bench_scale.py [--quick]      # quick: 16 images, 20k and 200k vectors
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import case_cli, goal_row, peak_rss_mb, run_case
from bench_ann import DIM, clustered

HERE = Path(__file__).resolve()
BUDGET = "64M"
BLOCK = 1 << 16
GOAL_OVERHEAD = 1.15


def embed_ratio(n_images: int) -> list[dict[str, Any]]:
    """Same shards through both executors, in this process; models warm in both."""
    import ray

    from xmodal.data.loaders import load_dataset
    from xmodal.executors import EmbedJob, embed_collection, run_local
    from xmodal.executors.ray_data import RayExecutor

    ds = load_dataset("tuxpaint")
    ds = ds.subset([im.id for im in ds.images[:n_images]])
    cpus = os.cpu_count() or 1
    rows, times = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        ray_exec = RayExecutor(concurrency=cpus, cpus=1)
        shard = max(1, n_images // (2 * cpus))
        for name, executor in (("local", run_local), ("ray", ray_exec)):
            job = EmbedJob("effnet-lite0", "minilm", f"{tmp}/{name}")
            t = time.perf_counter()
            embed_collection("tuxpaint", job, executor, shard, dataset=ds)
            times[name] = time.perf_counter() - t
        ray.shutdown()
        rows.append(
            {"case": f"embed {n_images} images, shard {shard}", "local_s": times["local"],
             "ray_s": times["ray"], "ray/local": times["ray"] / times["local"]}
        )  # fmt: skip
        ratio = times["ray"] / times["local"]
        rows.append(
            goal_row(
                f"embed {n_images} Tux Paint images: ray executor within {GOAL_OVERHEAD}x of local",
                f"ray {times['ray']:.1f} s",
                f"local {times['local']:.1f} s",
                ratio,
                f"<= {GOAL_OVERHEAD}",
                ratio <= GOAL_OVERHEAD,
            )
        )
        rows.append(real_recall(ds, f"{tmp}/local"))
    return rows


def real_recall(ds, folder: str) -> dict[str, Any]:
    """Index the real embeddings, aligned, with an IVF-PQ forced by a tiny budget."""
    from xmodal.align.registry import build_aligner
    from xmodal.experiments.pipeline import load_embedded
    from xmodal.retrieval.sharded_index import build_sharded_collection, parse_bytes

    whole, _ = load_embedded(folder)
    aligner = build_aligner("ridge", metric="cosine").fit(whole.all)
    aligner.save(f"{folder}/ridge.safetensors")
    t = time.perf_counter()
    rep = build_sharded_collection(
        folder, f"{folder}/index", parse_bytes("4K"), f"{folder}/ridge.safetensors", nprobe=4
    )
    return {
        "case": f"real: tux paint {len(whole.dataset.images)} images, ridge-aligned",
        "index": rep["images"]["plan"],
        "build_s": time.perf_counter() - t,
        "t2i_recall@10": rep["images"]["t2i_recall@10"],
        "i2t_recall@10": rep["captions"]["i2t_recall@10"],
    }


def index_case(case: dict[str, Any]) -> dict[str, Any]:
    """One synthetic size in a fresh process: blocks generated on the fly (never all in RAM)."""
    from xmodal.retrieval.sharded_index import (
        build_from_blocks,
        exact_topk,
        parse_bytes,
        plan_index,
        recall_at_k,
    )

    n = case["n"]

    def blocks():
        return ((s, clustered(min(BLOCK, n - s), seed=1 + s // BLOCK)) for s in range(0, n, BLOCK))

    plan = plan_index(n, DIM, parse_bytes(BUDGET))
    train = next(blocks())[1]  # one block of 65,536 (or all of a smaller n)
    queries = clustered(case["queries"], seed=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        index = build_from_blocks(blocks, plan, "cosine", train, Path(tmp) / "ix", nprobe=32)
        build_s = time.perf_counter() - t
        found = index.search(queries, 10)[1]
        exact = exact_topk(queries, blocks, 10, "cosine")[1]
    return {
        "case": f"synthetic {n:,} x {DIM}",
        "index": plan.describe(),
        "build_s": build_s,
        "peak_rss_mb": peak_rss_mb(),
        "recall@10": recall_at_k(found, exact),
    }


def main(quick: bool) -> list[dict[str, Any]]:
    sizes = (20_000, 200_000) if quick else (1_000_000, 10_000_000)
    rows = embed_ratio(16 if quick else 96)
    synthetic = [run_case(HERE, {"n": n, "queries": 100 if quick else 300}) for n in sizes]
    rss = [r["peak_rss_mb"] for r in synthetic]
    return [
        *rows,
        *synthetic,
        goal_row(
            f"sharded index build: peak RSS flat from {sizes[0]:,} to {sizes[1]:,} vectors",
            f"{rss[1]:.0f} MB at {sizes[1]:,}",
            f"{rss[0]:.0f} MB at {sizes[0]:,}",
            rss[1] / rss[0],
            "<= 1.5",
            rss[1] / rss[0] <= 1.5,
        ),
    ]


if __name__ == "__main__":
    case_cli(__doc__, main, index_case, "16 images, 20k and 200k vectors (minutes)")
