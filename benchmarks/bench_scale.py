"""Scale-out: Ray against local embedding, the embed driver's memory, and index builds in bounded
memory at growing n, each against a baseline measured in the same run.

1. Embedding: the same Tux Paint images (every one of them; 16 in quick mode) embedded by
   `local` and by `ray` (actors = CPUs, one core each): wall time of each, model loading
   included (once for local, once per actor, in parallel, for ray; Ray itself is started
   before the clock), and their ratio.
   Goal: ray / local <= 1.15.
2. The embed driver: a manifest of n pairs streamed into its listing and planned into shards,
   with an executor that reads each shard's rows and embeds nothing (the driver's share of
   `xmodal embed`), n and 10 n, each in a fresh process. Goal: peak RSS at 10 n <= 1.5 x at n.
3. Index builds: an embedding folder of n synthetic image-caption pairs (384-d float16, both in
   one space with a modality gap; 1,000 clusters in a 32-d latent space mapped to 384-d plus
   noise: real embeddings have low intrinsic dimension, isotropic noise would flatter nothing
   and mislead), written shard by shard to disk (`--data`, reused when
   complete), then indexed by `build_sharded_collection` exactly as `xmodal index build` does,
   each n in a fresh process, under one memory budget (2M: IVF-PQ with on-disk lists at every
   n) and, at the smallest n, as a flat index (the baseline). Per n: build time, peak RSS
   (VmHWM, which counts the pages of memory-mapped files too) and peak anonymous memory
   (sampled every 50 ms: what the process cannot give back), recall@10 of each direction
   against exact search for held-out queries, index bytes. Goal: peak RSS at each 10 n <= 1.5
   x at n. Plus the real vectors: the Tux Paint images just embedded, aligned by ridge
   regression, both directions.

    python benchmarks/bench_scale.py [--quick] [--sizes 100000,1000000] [--data DIR]
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import case_cli, goal_row, peak_rss_mb, run_case

HERE = Path(__file__).resolve()
DATA = HERE.parent.parent / "bench-results" / "scale-data"
BUDGET = "2M"
SHARD = 100_000
QUERIES = 200
GOAL_OVERHEAD, GOAL_MEMORY = 1.15, 1.5
#: the synthetic collection: CLUSTERS centres in a LATENT-d space, mapped to DIM-d
DIM, LATENT, CLUSTERS = 384, 32, 1000


# ---- 1. Ray against local -------------------------------------------------------------------


def embed_ratio(n_images: int | None) -> list[dict[str, Any]]:
    """Same shards through both executors, in this process (None: every Tux Paint image)."""
    import ray

    from xmodal.data.loaders import load_dataset
    from xmodal.executors import EmbedJob, embed_collection, run_local
    from xmodal.executors.ray_data import RayExecutor

    ds = load_dataset("tuxpaint")
    ds = ds.subset([im.id for im in ds.images[:n_images]])
    n_images = len(ds.images)
    cpus = os.cpu_count() or 1
    rows, times = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        ray_exec = RayExecutor(concurrency=cpus, cpus=1)
        shard = -(-n_images // (2 * cpus))  # two shards per actor, the last one as full
        for name, executor in (("local", run_local), ("ray", ray_exec)):
            job = EmbedJob("effnet-lite0", "minilm", f"{tmp}/{name}")
            t = time.perf_counter()
            embed_collection("tuxpaint", job, executor, shard, dataset=ds)
            times[name] = time.perf_counter() - t
        ray.shutdown()
        ratio = times["ray"] / times["local"]
        rows.append(
            {"case": f"embed {n_images} Tux Paint images, shard {shard}",
             "local_s": times["local"], "ray_s": times["ray"], "ray/local": ratio}
        )  # fmt: skip
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
        rows.append(real_recall(f"{tmp}/local"))
    return rows


def real_recall(folder: str) -> dict[str, Any]:
    """Index the real embeddings, aligned, with an on-disk IVF-PQ forced by a tiny budget."""
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
        "case": f"real: Tux Paint {len(whole.dataset.images)} images, ridge-aligned",
        "index": rep["images"]["plan"],
        "build_s": time.perf_counter() - t,
        "t2i_recall@10": rep["images"]["t2i_recall@10"],
        "i2t_recall@10": rep["captions"]["i2t_recall@10"],
    }


# ---- peak memory of a child process ---------------------------------------------------------


class AnonPeak:
    """The highest RssAnon of this process, sampled every 50 ms in a thread (MiB)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _status_mb("RssAnon"))

    def __enter__(self) -> AnonPeak:
        self.peak = _status_mb("RssAnon")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_mb("RssAnon"))


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


# ---- 2. the embed driver ---------------------------------------------------------------------


def driver_case(case: dict[str, Any]) -> dict[str, Any]:
    """`embed_collection` over a manifest of n pairs with an executor that embeds nothing."""
    from xmodal.executors import EmbedJob, embed_collection
    from xmodal.shards import ShardRecord

    n, folder = case["n"], Path(case["folder"])
    source = folder / f"pairs_{n}.csv"
    image = folder / "one.png"
    if not source.is_file():
        from PIL import Image

        Image.new("RGB", (8, 8)).save(image)
        with open(source, "w", encoding="utf-8") as f:
            f.write("image,caption,image_id\n")
            for k in range(n):
                f.write(f"{image},synthetic caption number {k} of image {k // 2},im{k // 2}\n")

    def rows_only(job, shards):
        for shard in shards:
            task = shard.task(Path(job.folder))
            dims, encoders = {"image": 1, "text": 1}, {"image": "image:none", "text": "text:none"}
            yield ShardRecord(task.index, len(task.images), len(task.captions), {}, encoders, dims)

    with tempfile.TemporaryDirectory(dir=folder) as out, AnonPeak() as anon:
        start_mb = peak_rss_mb()
        t = time.perf_counter()
        result = embed_collection(f"manifest:{source}", EmbedJob("none", "none", out), rows_only)
        seconds = time.perf_counter() - t
    assert result.captions == n
    return {
        "case": f"embed driver: {n:,} pairs listed and planned, nothing embedded",
        "n": n,
        "plan_s": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_at_start_mb": start_mb,
        "peak_anon_mb": anon.peak,
    }


# ---- 3. index builds -------------------------------------------------------------------------


def synthetic_folder(root: Path, n: int) -> Path:
    """n synthetic image-caption pairs as `xmodal embed` writes them, made shard by shard (never
    all in memory) and reused when a complete folder is already there."""
    from xmodal.files import sha256_file
    from xmodal.shards.format import FORMAT_VERSION, ShardRecord, shard_files, write_manifest

    folder = root / f"synthetic-{n}"
    manifest = folder / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("complete"):
        return folder
    structure = np.random.default_rng(0)
    centres = structure.standard_normal((CLUSTERS, LATENT)).astype(np.float32)
    proj = (structure.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)
    gap = (0.5 * structure.standard_normal(DIM) / np.sqrt(DIM)).astype(np.float32)
    records = []
    for k, s in enumerate(range(0, n, SHARD)):
        m = min(SHARD, n - s)
        rng = np.random.default_rng(1 + k)
        z = centres[rng.integers(0, CLUSTERS, m)]
        z += np.float32(0.5) * rng.standard_normal((m, LATENT), dtype=np.float32)
        images = z @ proj + np.float32(0.1) * rng.standard_normal((m, DIM), dtype=np.float32)
        z += np.float32(0.3) * rng.standard_normal((m, LATENT), dtype=np.float32)
        texts = z @ proj + gap + np.float32(0.1) * rng.standard_normal((m, DIM), dtype=np.float32)
        files = shard_files(k)
        _write_shard(folder, files, images, texts, s)
        digests = {rel: sha256_file(folder / rel) for rel in files.values()}
        encoders = {"image": "image:synthetic", "text": "text:synthetic"}
        records.append(vars(ShardRecord(k, m, m, digests, encoders, {"image": DIM, "text": DIM})))
    spec = {"spec": "synthetic", "fingerprint": "synthetic", "dim": DIM}
    write_manifest(
        folder,
        {"format": FORMAT_VERSION, "source": "synthetic", "dataset": f"synthetic-{n}",
         "fingerprint": f"synthetic-{n}", "shard_size": SHARD, "dtype": "float16",
         "image_spec": "synthetic", "text_spec": "synthetic", "planned_shards": len(records),
         "complete": True, "versions": {}, "load_problems": [], "image_encoder": spec,
         "text_encoder": spec, "shards": records},
    )  # fmt: skip
    return folder


def _write_shard(folder: Path, files: dict[str, str], images, texts, first: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part, x in (("img_emb", images), ("text_emb", texts)):
        (folder / part).mkdir(parents=True, exist_ok=True)
        np.save(folder / files[part], x.astype(np.float16), allow_pickle=False)
    ids = [f"im{first + r}" for r in range(len(images))]
    table = pa.table(
        {
            "row": pa.array(range(len(images)), pa.int64()),
            "caption_id": pa.array([f"c{first + r}" for r in range(len(images))]),
            "caption": pa.array(
                [f"synthetic caption of image {first + r}" for r in range(len(images))]
            ),
            "image_id": pa.array(ids),
            "path": pa.array([f"/synthetic/{i}.jpg" for i in ids]),
            "image_row": pa.array(range(len(images)), pa.int64()),
        }
    )
    (folder / "metadata").mkdir(exist_ok=True)
    pq.write_table(table, folder / files["metadata"])


def index_case(case: dict[str, Any]) -> dict[str, Any]:
    """One build in a fresh process, exactly as `xmodal index build DIR` runs it."""
    from xmodal.retrieval.sharded_index import build_sharded_collection, parse_bytes

    n, budget = case["n"], case["budget"]
    folder = synthetic_folder(Path(case["data"]), n)
    with tempfile.TemporaryDirectory(dir=case["data"]) as tmp, AnonPeak() as anon:
        start_mb = peak_rss_mb()
        t = time.perf_counter()
        rep = build_sharded_collection(
            folder, Path(tmp) / "ix", parse_bytes(budget), queries=QUERIES
        )
        build_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(tmp, "ix").rglob("*") if f.is_file())
    return {
        "case": f"synthetic {n:,} pairs x {DIM}-d, budget {budget}",
        "n": n,
        "index": rep["images"]["plan"],
        "build_s": build_s,
        "peak_rss_mb": peak_rss_mb(),
        "rss_at_start_mb": start_mb,
        "peak_anon_mb": anon.peak,
        "t2i_recall@10": rep["images"]["t2i_recall@10"],
        "i2t_recall@10": rep["captions"]["i2t_recall@10"],
        "index_mb": size / 2**20,
        **{f"{phase}_s": phase_seconds(rep, phase) for phase in ("train", "add", "recall")},
    }


def phase_seconds(report: dict[str, Any], phase: str) -> float:
    """Both sides' time in one phase of the build (training includes reading its sample)."""
    names = ("sample", "train") if phase == "train" else (phase,)
    return sum(report[side]["seconds"][name] for side in ("images", "captions") for name in names)


def run_one(case: dict[str, Any]) -> dict[str, Any]:
    if case["kind"] == "generate":  # before the measured process, which finds it on disk
        t = time.perf_counter()
        synthetic_folder(Path(case["data"]), case["n"])
        return {"n": case["n"], "seconds": time.perf_counter() - t}
    return driver_case(case) if case["kind"] == "driver" else index_case(case)


def memory_goal(what: str, small: dict[str, Any], big: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS at a larger n against a smaller one, both measured in this run."""
    ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
    return goal_row(
        f"{what}: peak RSS at {big['n']:,} within {GOAL_MEMORY}x of {small['n']:,} "
        f"({big['n'] / small['n']:.0f}x fewer)",
        f"{big['peak_rss_mb']:.0f} MB at {big['n']:,}",
        f"{small['peak_rss_mb']:.0f} MB at {small['n']:,}",
        ratio,
        f"<= {GOAL_MEMORY}",
        ratio <= GOAL_MEMORY,
    )


def with_ratios(rows: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Each row's time, memory and bytes against the baseline row (flat at the smallest n)."""
    for r in rows:
        r["build_vs_flat"] = r["build_s"] / base["build_s"]
        r["rss_vs_flat"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        r["bytes_vs_flat"] = r["index_mb"] / base["index_mb"]
    return rows


def main(
    quick: bool = False,
    sizes: list[int] | None = None,
    data: Path = DATA,
    embed_images: int | None = None,
    embed_only: bool = False,
) -> list[dict]:
    sizes = sizes or ([20_000, 200_000] if quick else [100_000, 1_000_000, 10_000_000])
    data.mkdir(parents=True, exist_ok=True)
    # FAISS's OpenMP threads spin while they wait: on a shared machine that burns the cores
    # the other threads need (PQ training measured 3.7x slower on 2 loaded cores)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = embed_ratio(embed_images or (16 if quick else None))
    if embed_only:
        return rows
    driver = [run_case(HERE, {"kind": "driver", "n": n, "folder": str(data)}) for n in sizes[:2]]
    index = {"kind": "index", "data": str(data)}
    for n in sizes:
        run_case(HERE, {"kind": "generate", "n": n, "data": str(data)})
    flat = run_case(HERE, index | {"n": sizes[0], "budget": "64G"})
    ivf = [run_case(HERE, index | {"n": n, "budget": BUDGET}) for n in sizes]
    goals = [memory_goal("embed driver", *driver)]
    goals += [memory_goal("sharded index build", a, b) for a, b in itertools.pairwise(ivf)]
    return [*rows, *driver, *with_ratios([flat, *ivf], flat), *goals]


if __name__ == "__main__":
    import argparse
    import sys

    if "--case" in sys.argv:
        case_cli(__doc__, main, run_one, "")
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--quick", action="store_true", help="16 images, 20k and 200k pairs")
        parser.add_argument("--sizes", help="comma-separated n, e.g. 100000,1000000")
        parser.add_argument("--data", type=Path, default=DATA, help="synthetic folders go here")
        parser.add_argument("--embed-images", type=int, help="images of the embed case (all)")
        parser.add_argument("--embed-only", action="store_true", help="the embed case alone")
        args = parser.parse_args()
        from _common import report

        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
        print(report(main(args.quick, sizes, args.data, args.embed_images, args.embed_only)))
