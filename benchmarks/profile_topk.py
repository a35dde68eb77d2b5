"""Where exact top-k spends its time, in CPU seconds (steadier than wall time on a shared machine).

For each goal shape, one thread's share as `product_merge` runs it: the matrix products alone
(single-threaded BLAS, the same blocks), then with the heap merge, then with Euclidean's
centring and k + MARGIN heaps; the Euclidean re-rank on its own; and the Manhattan and
chi-square kernels on the same block. `ratio`: to the products alone (to Manhattan for the
kernels). Each figure is the fastest of --repeat runs.

    python benchmarks/profile_topk.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import gaussian, markdown_table
from threadpoolctl import threadpool_limits

from xmodal.similarity import kernels, search
from xmodal.similarity.measures import euclidean

K = 10
#: one thread's share of each goal case: (queries, gallery rows, d)
SHARES = {"COCO-5K": (25_000, 2_500, 512), "1,000 x 1,000,000 x 384": (1_000, 81_920, 384)}
QUICK_SHARES = {"COCO-5K": (5_000, 2_500, 512), "1,000 x 1,000,000 x 384": (1_000, 16_384, 384)}
#: queries the Manhattan / chi-square kernels are timed on (they scale linearly in the queries)
KERNEL_QUERIES = 256


def cpu_seconds(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _product(qb: np.ndarray, gb: np.ndarray, out: np.ndarray) -> None:
    np.matmul(qb, gb.T, out=out)


def _no_merge(*args: Any) -> None:
    pass


def profile(name: str, nq: int, ng: int, d: int, repeat: int) -> list[dict[str, Any]]:
    q, g = gaussian(nq, d, seed=1), gaussian(ng, d, seed=2)
    budget = search.THREAD_BLOCK
    flop = 2 * nq * ng * d

    def share(merge: Callable[..., None], size: int, prepare=search._as_is) -> Callable[[], Any]:
        return lambda: search._merge(q, g, size, budget, _product, prepare, 0, merge)

    def centred(gb: np.ndarray):
        gb = gb - np.float32(0.5)  # a centred copy, as for a gallery off the origin
        return gb, np.full(len(gb), 2, np.float32), -search.sq_norms(gb)

    size = K + euclidean.MARGIN
    cand = search._merge(q, g, size, budget, _product, centred, 0, kernels.merge_topk_serial)[1]
    steps = {
        "products alone": share(_no_merge, K),
        "products + merge (k = 10)": share(kernels.merge_topk_serial, K),
        f"products + merge (k = {size}), centred copy": share(
            kernels.merge_topk_serial, size, centred
        ),
        f"Euclidean re-rank of k + {euclidean.MARGIN}": lambda: kernels.rerank_sq_distances(
            q, g, cand.copy(), K
        ),
    }
    rows = []
    with threadpool_limits(1, "blas"):
        base = cpu_seconds(steps["products alone"], repeat)
        for step, fn in steps.items():
            secs = base if step == "products alone" else cpu_seconds(fn, repeat)
            rate = flop / secs / 1e9 if step.startswith("products") else None
            rows.append(_row(name, (nq, ng, d), step, secs, secs / base, rate))
    rows += _kernels(name, q[:KERNEL_QUERIES], g, repeat)
    return rows


def _kernels(name: str, q: np.ndarray, g: np.ndarray, repeat: int) -> list[dict[str, Any]]:
    out = np.empty((len(q), len(g)), np.float32)
    manhattan = cpu_seconds(lambda: kernels.manhattan_scores(q, g, out), repeat)
    chi = cpu_seconds(lambda: kernels.chi_square_scores(q, g, out), repeat)
    shape = (len(q), len(g), q.shape[1])
    return [
        _row(name, shape, "Manhattan kernel (all cores)", manhattan, 1.0, None),
        _row(name, shape, "chi-square kernel (all cores)", chi, chi / manhattan, None),
    ]


def _row(name, shape, step, secs, ratio, rate) -> dict[str, Any]:
    nq, ng, d = shape
    return {
        "case (one thread's share)": f"{name}: {nq:,} x {ng:,} x {d}",
        "step": step,
        "cpu seconds": secs,
        "ratio": ratio,
        "GFLOP/s per core": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shares")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, (nq, ng, d) in (QUICK_SHARES if args.quick else SHARES).items():
        rows += profile(name, nq, ng, d, args.repeat)
    print(f"load average at the end: {os.getloadavg()}\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
