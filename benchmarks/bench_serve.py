"""`xmodal serve` under load: concurrent clients sending text queries for a fixed time.

Two collections, each served by a real `xmodal serve` process (the one machine runs both the
server and the async httpx clients, so the clients' CPU counts against the server's):

- the demo run (`make demo`: the newest runs/demo-*; its test split, exact search);
- one million synthetic vectors (Gaussian, in the demo aligner's output space) in an IVF index
  built through `xmodal.retrieval.index`, with the demo's encoders and aligner, so every query
  runs the real text encoder and aligner before the approximate search. Built once into
  bench-results/ and reused.

Reports requests per second, p50/p95/p99 latency and errors (non-200 answers and failed
connections). Goal: 0 errors and p99 < 100 ms for text queries on the demo collection.

    python benchmarks/bench_serve.py [--quick] [--clients 32] [--seconds 60] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import gaussian, goal_row, report  # noqa: E402

WORDS = [
    "apple",
    "cat",
    "dog",
    "fish",
    "bird",
    "house",
    "tree",
    "car",
    "boat",
    "guitar",
    "flower",
    "horse",
    "frog",
    "banana",
    "bear",
    "tiger",
    "train",
    "plane",
    "hat",
    "shoe",
    "cake",
    "ball",
    "star",
    "moon",
    "sun",
    "book",
    "chair",
    "lamp",
    "clock",
    "key",
    "bell",
    "drum",
]
QUERIES = [f"a {adjective} {w}" for adjective in ("red", "small", "happy") for w in WORDS]
GOAL_P99_MS = 100.0


def newest_demo_run() -> Path | None:
    runs = sorted((ROOT / "runs").glob("demo-*/results.json"))
    return runs[-1].parent if runs else None


def million_collection(run: Path, n: int, seed: int = 0) -> Path:
    """n synthetic image vectors (and n // 100 captions) in an IVF index, in the output space of
    the aligner `xmodal serve` chooses for `run`; built once, reused."""
    from xmodal.files import atomic_path
    from xmodal.retrieval.index import build_index, write_manifest
    from xmodal.serve import load_collections

    folder = ROOT / "bench-results" / f"serve-synthetic-{n}"
    if (folder / "collection.json").exists():
        return folder
    (demo,) = load_collections([run]).values()
    dim = demo.images.dim
    folder.mkdir(parents=True, exist_ok=True)
    n_captions = max(1000, n // 100)
    for name, count, nlist in (("images", n, 1024), ("captions", n_captions, 64)):
        index = build_index("ivf", dim, demo.aligner.metric, nlist=nlist, nprobe=16)
        index.add(gaussian(count, dim, seed + len(name)))
        index.save(folder / name)
    demo.aligner.save(folder / "aligner.safetensors")
    rng = np.random.default_rng(seed)
    with atomic_path(folder / "items.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            image_ids=np.char.add("synthetic/", np.arange(n).astype(str)),
            image_paths=np.full(n, "no-such-file.png"),
            captions=np.char.add("synthetic caption ", np.arange(n_captions).astype(str)),
            caption_image=rng.integers(0, n, n_captions),
        )
    meta = {
        "image_encoder": demo.image_encoder,
        "text_encoder": demo.text_encoder,
        "metric": str(demo.aligner.metric),
        "kind": "ivf",
        "dataset": "synthetic",
        "images": n,
        "captions": n_captions,
    }
    # last, with the checksums of the files beside it, as `xmodal index build` writes it
    write_manifest(
        folder / "collection.json", meta, [folder / "aligner.safetensors", folder / "items.npz"]
    )
    return folder


class Server:
    """`xmodal serve PATH --port 0` in a subprocess; its URL once ready; Ctrl-C to stop."""

    def __init__(self, path: Path) -> None:
        src = str(ROOT / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "xmodal.cli", "serve", str(path), "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        self.url = ""
        while not self.url:
            try:
                line = lines.get(timeout=600)
            except queue.Empty:
                self.stop()
                raise RuntimeError("server did not start:\n" + "".join(self.log)) from None
            if "ready at " in line:
                self.url = line.split("ready at ", 1)[1].strip().rstrip("/")
            elif self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.log))

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "HTTP/1.1" not in line:  # the access log: one line a request, not kept
                self.log.append(line)
            lines.put(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def load(url: str, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """`clients` concurrent loops of GET /api/search?q=...&k=10 for `seconds` (after `warmup`
    seconds not counted)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        start = time.perf_counter()
        counting_from, end = start + warmup, start + warmup + seconds

        async def one_client(i: int) -> None:
            n = i
            while (now := time.perf_counter()) < end:
                q = QUERIES[n % len(QUERIES)]
                n += clients
                try:
                    r = await client.get("/api/search", params={"q": q, "k": 10})
                    ok = r.status_code == 200 and len(r.json()["results"]) == 10
                    problem = None if ok else f"HTTP {r.status_code}: {r.text[:100]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                if now >= counting_from:
                    latencies.append(time.perf_counter() - now)
                    if problem:
                        errors.append(problem)

        await asyncio.gather(*(one_client(i) for i in range(clients)))
        info = (await client.get("/api/collections")).json()[0]
    ms = np.array(latencies) * 1000
    return {
        "collection": info["name"],
        "vectors": info["images"],
        "search": info["search"]["images"],
        "clients": clients,
        "seconds": seconds,
        "requests": len(ms),
        "qps": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def measure(path: Path, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    server = Server(path)
    try:
        return asyncio.run(load(server.url, clients, seconds, warmup))
    finally:
        server.stop()


def main(
    quick: bool = False,
    clients: int = 32,
    seconds: float | None = None,
    run: Path | None = None,
    vectors: int | None = None,
) -> list[dict[str, Any]]:
    seconds = seconds or (3.0 if quick else 60.0)
    warmup = 1.0 if quick else 5.0
    vectors = vectors or (200_000 if quick else 1_000_000)
    run = run or newest_demo_run()
    if run is None:
        return [{"collection": "demo", "note": "skipped: no runs/demo-* (run `make demo`)"}]
    demo = measure(run, clients, seconds, warmup)
    big = measure(million_collection(run, vectors), clients, seconds, warmup)
    met = demo["errors"] == 0 and demo["p99_ms"] is not None and demo["p99_ms"] < GOAL_P99_MS
    p99 = demo["p99_ms"]
    goal = goal_row(
        f"serve: demo text queries, {clients} clients: 0 errors, p99 < {GOAL_P99_MS:.0f} ms",
        f"{demo['errors']} errors, p99 {p99} ms",
        "none: an absolute target",
        p99 / GOAL_P99_MS if p99 is not None else float("nan"),
        "< 1 (of the p99 target), 0 errors",
        met,
    )
    return [demo, big, goal]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per collection, 200k vectors")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, help="measured seconds per collection")
    parser.add_argument("--run", type=Path, help="the demo run (default: newest runs/demo-*)")
    parser.add_argument("--vectors", type=int, help="synthetic collection size (default 1M)")
    args = parser.parse_args()
    rows = main(args.quick, args.clients, args.seconds, args.run, args.vectors)
    print(report(rows))
