"""Exact top-10 for the four metrics: xmodal.similarity.topk against baselines in the same run.

Cases, named queries x gallery x d: the COCO-5K shape (25,000 captions x 5,000 images x 512) and
1,000 queries against a 1,000,000 x 384 gallery (--quick: 5,000 x 1,000 x 512 and 100 x 100,000
x 384). Baselines: naive numpy (the score matrix in query blocks, then argpartition; one query at
a time for Manhattan/chi-square), scipy cdist, torch (torch.mm + torch.topk per block) and FAISS
flat indexes (IndexFlatIP on unit vectors, IndexFlatL2, IndexFlat(d, METRIC_L1)). The machine's
SGEMM rate is measured in the same run: the best of numpy and torch on all cores and of one
single-threaded numpy matmul per core, at a square and a search-shaped size. Each case runs in
its own process so its peak RSS (VmHWM, which includes the input arrays) is its own. Methods too
slow for the full size run on a subset of queries and are scaled linearly (the `note` column
says so). xmodal's Euclidean top-k is checked against the direct formula (float64) on a few
queries of every case.

    python benchmarks/bench_topk.py [--quick] [--scale coco|1m] [--methods xmodal,faiss]

--scale runs one of the two cases and --methods some of the methods (with the SGEMM rate; goals
whose baseline was not run are left out), for a shorter run on a shared machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _common import best_time, case_cli, gaussian, goal_row, peak_rss_mb, run_case

K = 10
SCALES = [(25_000, 5_000, 512), (1_000, 1_000_000, 384)]
QUICK_SCALES = [(5_000, 1_000, 512), (100, 100_000, 384)]
#: slow baselines run on at most this many query x gallery x d multiply-adds, then scale up
SLOW_WORK = 4e9
#: xmodal's Manhattan and chi-square likewise (they scale linearly in the queries)
KERNEL_WORK = 4e10
METHODS = {
    "cosine": ["xmodal", "numpy", "scipy", "torch", "faiss"],
    "euclidean": ["xmodal", "numpy", "scipy", "torch", "faiss"],
    "manhattan": ["xmodal", "numpy", "scipy", "faiss"],
    "chi_square": ["xmodal", "numpy"],
}
SLOW = {("manhattan", "numpy"), ("manhattan", "scipy"), ("manhattan", "faiss")}
SLOW |= {("chi_square", "numpy"), ("cosine", "scipy"), ("euclidean", "scipy")}
#: xmodal and FAISS (the goals' sides) take the best of 3 runs, not 1, on cases of at most
#: this many multiply-adds (a few seconds): one run on a shared machine can lose a third of its
#: speed to other jobs
SHORT_WORK = 1e11
#: the score entries a baseline holds at once (1 GB of float32)
BASELINE_BLOCK = 1 << 28
GOAL_SGEMM, GOAL_CHI = 0.8, 1.5
FAISS_NAMES = {"cosine": "IndexFlatIP", "euclidean": "IndexFlatL2", "manhattan": "flat L1"}


def case_name(nq: int, ng: int, d: int) -> str:
    shape = f"{nq:,} x {ng:,} x {d}"
    return f"COCO-5K {shape}" if (nq, ng, d) == SCALES[0] else shape


def _naive_topk(scores: np.ndarray) -> np.ndarray:
    part = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), 1), 1)


def _numpy(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        return _by_query_block(qn, len(g), lambda qb: qb @ gn.T)
    if metric == "euclidean":
        gg = (g**2).sum(1)[None, :]

        def neg_dist(qb: np.ndarray) -> np.ndarray:
            return -np.sqrt(np.maximum((qb**2).sum(1)[:, None] + gg - 2 * qb @ g.T, 0))

        return _by_query_block(q, len(g), neg_dist)
    rows = []
    for x in q:  # one query at a time: the whole gallery x d difference fits, a batch would not
        if metric == "manhattan":
            rows.append(-np.abs(g - x).sum(1))
        else:
            den = np.abs(g) + np.abs(x)
            rows.append(-0.5 * ((g - x) ** 2 / np.where(den > 0, den, 1)).sum(1))
    return _naive_topk(np.stack(rows))


def _by_query_block(q: np.ndarray, ng: int, scores) -> np.ndarray:
    step = max(1, BASELINE_BLOCK // ng)
    return np.concatenate([_naive_topk(scores(q[s : s + step])) for s in range(0, len(q), step)])


def _scipy(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    from scipy.spatial.distance import cdist

    name = {"cosine": "cosine", "euclidean": "euclidean", "manhattan": "cityblock"}[metric]
    return _naive_topk(-cdist(q, g, name))


def _torch(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    """torch.mm then torch.topk per block (2 q.g - |g|^2 ranks like -|q - g|)."""
    import torch

    tq, tg = torch.from_numpy(q), torch.from_numpy(g)
    if metric == "cosine":
        tq, tg = torch.nn.functional.normalize(tq, dim=1), torch.nn.functional.normalize(tg, dim=1)
        shift = torch.zeros(len(g))
    else:
        tq, shift = 2 * tq, -(tg * tg).sum(1)
    rows = max(1, min(len(q), BASELINE_BLOCK // len(g)))
    cols = min(len(g), BASELINE_BLOCK // rows)
    found = []
    for q0 in range(0, len(q), rows):
        best_v, best_i = None, None
        for g0 in range(0, len(g), cols):
            s = torch.addmm(shift[g0 : g0 + cols], tq[q0 : q0 + rows], tg[g0 : g0 + cols].T)
            v, i = torch.topk(s, min(K, s.shape[1]), dim=1)
            if best_v is not None:
                v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i + g0], 1)
                v, pick = torch.topk(v, K, dim=1)
                i = torch.gather(i, 1, pick)
            best_v, best_i = v, i
        found.append(best_i.numpy())
    return np.concatenate(found)


def _faiss(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    import faiss

    if metric == "cosine":
        q, g = (
            q / np.linalg.norm(q, axis=1, keepdims=True),
            g / np.linalg.norm(g, axis=1, keepdims=True),
        )
        index = faiss.IndexFlatIP(g.shape[1])
    else:
        kind = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_L1
        index = faiss.IndexFlat(g.shape[1], kind)
    index.add(g)
    return index.search(q, K)[1]


def _xmodal(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    from xmodal.similarity import topk

    return topk(q, g, K, metric)[1]


def euclidean_is_exact(q: np.ndarray, g: np.ndarray, found: np.ndarray) -> bool:
    """Do xmodal's neighbours of a few queries match the direct formula (float64, ties to the
    lower index)?"""
    from xmodal.similarity import kernels

    for r in range(min(4, len(q))):
        cols = np.arange(len(g))
        d2 = kernels.pair_sq_distances(q, g, np.full(len(g), r), cols)
        if not np.array_equal(np.lexsort((cols, d2))[:K], found[r]):
            return False
    return True


def run_one(case: dict[str, Any]) -> dict[str, Any]:
    """Inside the case's own process: make the data, warm up, time, report peak memory."""
    nq, ng, d = case["nq"], case["ng"], case["d"]
    q, g = gaussian(case["sub"], d, seed=1), gaussian(ng, d, seed=2)
    fn = {"xmodal": _xmodal, "numpy": _numpy, "scipy": _scipy, "torch": _torch, "faiss": _faiss}
    fn = fn[case["method"]]
    fn(q[:4], g[:1000], case["metric"])  # imports, numba cache load, thread start
    data_mb = peak_rss_mb()
    seconds = best_time(lambda: fn(q, g, case["metric"]), case["repeat"]) * nq / case["sub"]
    out = {"seconds": seconds, "peak_mb": peak_rss_mb(), "data_mb": data_mb}
    if case["method"] == "xmodal" and case["metric"] == "euclidean":
        out["exact"] = euclidean_is_exact(q, g, fn(q[:4], g, "euclidean"))
    return out


def _sgemm(m: int, n: int, d: int, repeat: int) -> dict[str, float]:
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from threadpoolctl import threadpool_limits

    a, b = gaussian(m, d, 3), gaussian(n, d, 4)
    out = np.empty((m, n), np.float32)
    ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    cores = len(os.sched_getaffinity(0))
    outs = [np.empty((m, n), np.float32) for _ in range(cores)]
    pool = ThreadPoolExecutor(cores)

    def per_core() -> None:
        with threadpool_limits(1, "blas"):
            list(pool.map(lambda o: np.matmul(a, b.T, out=o), outs))

    calls = {
        "numpy": (lambda: np.matmul(a, b.T, out=out), 1),
        "torch": (lambda: torch.mm(ta, tb.T, out=tout), 1),
        f"numpy, {cores} threads x 1-thread BLAS": (per_core, cores),
    }
    rates = {}
    for name, (fn, copies) in calls.items():
        fn()
        rates[f"{name} {m}x{n}x{d}"] = copies * 2 * m * n * d / best_time(fn, repeat) / 1e9
    pool.shutdown()
    return rates


def sgemm_rate(quick: bool) -> dict[str, float]:
    """GFLOP/s of float32 matmul: square 2048^3 and a search-shaped block, several ways."""
    repeat = 3 if quick else 5
    return _sgemm(2048, 2048, 2048, repeat) | _sgemm(1024, 16384, 384, repeat)


#: --scale names for the cases, in SCALES / QUICK_SCALES order
SCALE_NAMES = ["coco", "1m"]


def main(
    quick: bool = False, scale: str | None = None, methods: set[str] | None = None
) -> list[dict[str, Any]]:
    scales = QUICK_SCALES if quick else SCALES
    if scale is not None:
        scales = [scales[SCALE_NAMES.index(scale)]]
    rates = sgemm_rate(quick)
    peak = max(rates.values())
    best = max(rates, key=rates.get)
    rows: list[dict[str, Any]] = [
        {"bench": "sgemm", "case (queries x gallery x d)": shape, "GFLOP/s": r}
        for shape, r in rates.items()
    ]
    goals: list[dict[str, Any]] = []
    for nq, ng, d in scales:
        name = case_name(nq, ng, d)
        times: dict[tuple[str, str], float] = {}
        for metric, names in METHODS.items():
            for method in names:
                if methods is not None and method not in methods:
                    continue
                sub = nq
                if (metric, method) in SLOW:
                    sub = int((SLOW_WORK / 8 if quick else SLOW_WORK) // (ng * d))
                elif method == "xmodal" and metric in ("manhattan", "chi_square"):
                    sub = int((KERNEL_WORK / 8 if quick else KERNEL_WORK) // (ng * d))
                sub = min(nq, max(16, sub))
                case = {"nq": nq, "ng": ng, "d": d, "metric": metric, "method": method}
                short = method in ("xmodal", "faiss") and sub * ng * d <= SHORT_WORK
                repeat = 2 if quick else 3 if short else 1
                res = run_case(__file__, case | {"sub": sub, "repeat": repeat})
                times[metric, method] = res["seconds"]
                row = {"bench": "topk", "case (queries x gallery x d)": name, "metric": metric}
                row |= {
                    "method": method,
                    "seconds": res["seconds"],
                    "queries/s": nq / res["seconds"],
                }
                row |= {"peak_mb": res["peak_mb"], "data_mb": res["data_mb"]}
                row["note"] = f"timed on {sub} queries, scaled" if sub < nq else ""
                if "exact" in res:
                    row["note"] += "exact vs direct formula: " + ("yes" if res["exact"] else "NO")
                if method != "xmodal":
                    row["xmodal_speedup"] = res["seconds"] / times[metric, "xmodal"]
                if method == "xmodal" and metric in ("cosine", "euclidean"):
                    row["sgemm_fraction"] = 2 * nq * ng * d / res["seconds"] / 1e9 / peak
                rows.append(row)
        goals += scale_goals(name, times, (peak, best), nq * ng * d)
        mine = [r for r in rows if r.get("case (queries x gallery x d)") == name]
        mine = [r for r in mine if r["method"] == "xmodal"]
        if ng >= 100_000 and mine:
            mb, data = max(r["peak_mb"] for r in mine), max(r["data_mb"] for r in mine)
            goals.append(
                goal_row(
                    f"{name}: exact search peak RSS < 2 GB (incl. the gallery)",
                    f"{mb:.0f} MB",
                    f"inputs alone {data:.0f} MB",
                    mb / 2048,
                    "< 1 (of 2 GB)",
                    mb < 2048,
                )
            )
    return rows + goals


def scale_goals(
    name: str, t: dict[tuple[str, str], float], sgemm: tuple[float, str], work: float
) -> list[dict[str, Any]]:
    peak, best = sgemm
    out = []
    for metric in ("cosine", "euclidean"):
        if (metric, "xmodal") not in t:
            continue
        rate = 2 * work / t[metric, "xmodal"] / 1e9
        out.append(
            goal_row(
                f"{name}: exact {metric} top-10 at >= {GOAL_SGEMM:.0%} of the SGEMM rate",
                f"{rate:.0f} GFLOP/s",
                f"SGEMM {peak:.0f} GFLOP/s ({best})",
                rate / peak,
                f">= {GOAL_SGEMM}",
                rate >= GOAL_SGEMM * peak,
            )
        )
    for metric, faiss_name in FAISS_NAMES.items():
        if not {(metric, "faiss"), (metric, "xmodal")} <= t.keys():
            continue
        ratio = t[metric, "faiss"] / t[metric, "xmodal"]
        out.append(
            goal_row(
                f"{name}: exact {metric} top-10 no slower than FAISS {faiss_name}",
                f"{t[metric, 'xmodal']:.3g} s",
                f"FAISS {t[metric, 'faiss']:.3g} s",
                ratio,
                ">= 1 (speed-up)",
                ratio >= 1,
            )
        )
    if {("manhattan", "scipy"), ("manhattan", "xmodal")} <= t.keys():
        vs_scipy = t["manhattan", "scipy"] / t["manhattan", "xmodal"]
        out.append(
            goal_row(
                f"{name}: Manhattan top-10 >= 3x faster than scipy cdist",
                f"{t['manhattan', 'xmodal']:.3g} s",
                f"scipy {t['manhattan', 'scipy']:.3g} s",
                vs_scipy,
                ">= 3 (speed-up)",
                vs_scipy >= 3,
            )
        )
    if {("chi_square", "xmodal"), ("manhattan", "xmodal")} <= t.keys():
        chi = t["chi_square", "xmodal"] / t["manhattan", "xmodal"]
        out.append(
            goal_row(
                f"{name}: chi-square top-10 within {GOAL_CHI}x of Manhattan's time",
                f"{t['chi_square', 'xmodal']:.3g} s",
                f"Manhattan {t['manhattan', 'xmodal']:.3g} s",
                chi,
                f"<= {GOAL_CHI}",
                chi <= GOAL_CHI,
            )
        )
    return out


if __name__ == "__main__":
    import sys

    def take(flag: str, allowed: set[str]) -> set[str] | None:
        """Remove `flag VALUE` from the command line (case_cli parses the rest): VALUE's
        comma-separated names, each checked against `allowed`."""
        if flag not in sys.argv:
            return None
        at = sys.argv.index(flag)
        names = set(sys.argv[at + 1].split(",")) if at + 1 < len(sys.argv) else set()
        if not names or not names <= allowed:
            sys.exit(f"{flag} takes names from {', '.join(sorted(allowed))}")
        del sys.argv[at : at + 2]
        return names

    scales = take("--scale", set(SCALE_NAMES))
    if scales is not None and len(scales) != 1:
        sys.exit("--scale takes one name")
    scale = None if scales is None else scales.pop()
    methods = take("--methods", {m for names in METHODS.values() for m in names})
    case_cli(
        __doc__,
        lambda quick: main(quick, scale, methods),
        run_one,
        "small sizes (a minute or two)",
    )
