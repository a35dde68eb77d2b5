"""Exact top-10 for the four metrics: xmodal.similarity.topk against baselines in the same run.

Scales: COCO-5K (25,000 captions x 5,000 images, d=512) and a gallery of 1,000,000 x 384 with 300
queries (--quick: 5,000 x 1,000 and 100 x 100,000). Baselines: naive numpy (the full score matrix
then argpartition, or one query at a time for Manhattan/chi-square), scipy cdist, and FAISS flat
indexes (IndexFlatIP on unit vectors, IndexFlatL2, IndexFlat(d, METRIC_L1)). The machine's SGEMM
rate is measured in the same run. Each case runs in its own process so its peak RSS
(VmHWM, which includes the input arrays) is its own. Baselines too slow for the full size run
on a subset of queries and are scaled linearly (the `note` column says so).

    python benchmarks/bench_topk.py [--quick]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _common import best_time, case_cli, gaussian, peak_rss_mb, run_case

K = 10
SCALES = {"coco-5k": (25_000, 5_000, 512), "gallery-1m": (300, 1_000_000, 384)}
QUICK_SCALES = {"coco-5k": (5_000, 1_000, 512), "gallery-1m": (100, 100_000, 384)}
#: slow baselines run on at most this many query x gallery x d multiply-adds, then scale up
SLOW_WORK = 4e9
METHODS = {
    "cosine": ["xmodal", "numpy", "scipy", "faiss"],
    "euclidean": ["xmodal", "numpy", "scipy", "faiss"],
    "manhattan": ["xmodal", "numpy", "scipy", "faiss"],
    "chi_square": ["xmodal", "numpy"],
}
SLOW = {("manhattan", "numpy"), ("manhattan", "scipy"), ("manhattan", "faiss")}
SLOW |= {("chi_square", "numpy"), ("cosine", "scipy"), ("euclidean", "scipy")}


def _naive_topk(scores: np.ndarray) -> np.ndarray:
    part = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), 1), 1)


def _numpy(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        return _naive_topk(qn @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T)
    if metric == "euclidean":
        d2 = (q**2).sum(1)[:, None] + (g**2).sum(1)[None, :] - 2 * q @ g.T
        return _naive_topk(-np.sqrt(np.maximum(d2, 0)))
    rows = []
    for x in q:  # one query at a time: the whole gallery x d difference fits, a batch would not
        if metric == "manhattan":
            rows.append(-np.abs(g - x).sum(1))
        else:
            den = np.abs(g) + np.abs(x)
            rows.append(-0.5 * ((g - x) ** 2 / np.where(den > 0, den, 1)).sum(1))
    return _naive_topk(np.stack(rows))


def _scipy(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    from scipy.spatial.distance import cdist

    name = {"cosine": "cosine", "euclidean": "euclidean", "manhattan": "cityblock"}[metric]
    return _naive_topk(-cdist(q, g, name))


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


def run_one(case: dict[str, Any]) -> dict[str, Any]:
    """Inside the case's own process: make the data, warm up, time, report peak memory."""
    nq, ng, d = case["nq"], case["ng"], case["d"]
    q, g = gaussian(case["sub"], d, seed=1), gaussian(ng, d, seed=2)
    fn = {"xmodal": _xmodal, "numpy": _numpy, "scipy": _scipy, "faiss": _faiss}[case["method"]]
    fn(q[:4], g[:1000], case["metric"])  # imports, numba cache load, thread start
    data_mb = peak_rss_mb()
    seconds = best_time(lambda: fn(q, g, case["metric"]), case["repeat"]) * nq / case["sub"]
    return {"seconds": seconds, "peak_mb": peak_rss_mb(), "data_mb": data_mb}


def _sgemm(m: int, n: int, d: int, repeat: int) -> dict[str, float]:
    import torch

    a, b = gaussian(m, d, 3), gaussian(n, d, 4)
    out = np.empty((m, n), np.float32)
    ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    calls = {
        "numpy": lambda: np.matmul(a, b.T, out=out),
        "torch": lambda: torch.mm(ta, tb.T, out=tout),
    }
    rates = {}
    for name, fn in calls.items():
        fn()
        rates[f"{name} {m}x{n}x{d}"] = 2 * m * n * d / best_time(fn, repeat) / 1e9
    return rates


def sgemm_rate(quick: bool) -> dict[str, float]:
    """GFLOP/s of numpy's and torch's float32 matmul: square 2048^3 and a search-shaped block."""
    repeat = 3 if quick else 5
    return _sgemm(2048, 2048, 2048, repeat) | _sgemm(1024, 16384, 384, repeat)


def main(quick: bool = False) -> list[dict[str, Any]]:
    rates = sgemm_rate(quick)
    peak = max(rates.values())
    rows: list[dict[str, Any]] = [
        {"bench": "sgemm", "case": shape, "GFLOP/s": r} for shape, r in rates.items()
    ]
    goals: list[dict[str, Any]] = []
    for scale, (nq, ng, d) in (QUICK_SCALES if quick else SCALES).items():
        times = {}
        for metric, methods in METHODS.items():
            for method in methods:
                slow = (metric, method) in SLOW
                budget = SLOW_WORK / 8 if quick else SLOW_WORK
                sub = min(nq, max(4, int(budget // (ng * d)))) if slow else nq
                case = {"nq": nq, "ng": ng, "d": d, "metric": metric, "method": method}
                res = run_case(__file__, case | {"sub": sub, "repeat": 2 if quick else 1})
                times[metric, method] = res["seconds"]
                row = {"bench": "topk", "case": f"{scale} {nq}x{ng}x{d}", "metric": metric}
                row |= {
                    "method": method,
                    "seconds": res["seconds"],
                    "queries/s": nq / res["seconds"],
                }
                row |= {"peak_mb": res["peak_mb"], "data_mb": res["data_mb"]}
                row["note"] = f"timed on {sub} queries, scaled" if sub < nq else ""
                if method != "xmodal":
                    row["xmodal_speedup"] = res["seconds"] / times[metric, "xmodal"]
                if method == "xmodal" and metric in ("cosine", "euclidean"):
                    row["sgemm_fraction"] = 2 * nq * ng * d / res["seconds"] / 1e9 / peak
                rows.append(row)
        goals += scale_goals(f"{scale} ({nq}x{ng}x{d})", times, rows, peak, nq * ng * d)
    return rows + goals


def scale_goals(scale: str, t: dict, rows: list[dict], peak: float, work: float) -> list[dict]:
    def goal(name: str, measured: float, met: bool, unit: str = "x") -> dict[str, Any]:
        return {"goal": f"{scale}: {name}", "measured": f"{measured:.2f}{unit}", "met": met}

    out = []
    for metric in ("cosine", "euclidean"):
        frac = 2 * work / t[metric, "xmodal"] / 1e9 / peak
        out.append(goal(f"{metric} >= 70% of SGEMM rate", 100 * frac, frac >= 0.7, "%"))
    man = t["manhattan", "xmodal"]
    vs_scipy, vs_faiss = t["manhattan", "scipy"] / man, t["manhattan", "faiss"] / man
    out.append(goal("manhattan >= 3x faster than scipy cdist", vs_scipy, vs_scipy >= 3))
    out.append(goal("manhattan no slower than FAISS flat L1", vs_faiss, vs_faiss >= 1))
    chi = t["chi_square", "xmodal"] / man
    out.append(goal("chi-square time within 2x of manhattan", chi, chi <= 2))
    if scale.startswith("gallery"):
        mb = max(r["peak_mb"] for r in rows[-len(t) :] if r["method"] == "xmodal")
        out.append(goal("exact search peak RSS < 2 GB (incl. the gallery)", mb, mb < 2048, " MB"))
    return out


if __name__ == "__main__":
    case_cli(__doc__, main, run_one, "small sizes (a minute or two)")
