"""Does a gap measure predict retrieval? Rank correlation across configurations or models.

Which results columns are gap measures is decided here too (`is_measure`): the `raw_<measure>`
/ `aligned_<measure>` columns a run writes with `geometry: true`, less the bookkeeping columns
that record how a measure was taken (sample sizes, parameters, quantiles).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_ROWS = 3  # below this a rank correlation says nothing
PREFIXES = ("raw_", "aligned_")
#: column names (after the prefix) that record how a measure was taken, not a measure
BOOKKEEPING = re.compile(
    r"^(n_images|n_texts|dim_images|dim_texts|space)$"
    r"|_(n|n_images|n_texts|k|reg|projections|iterations|marginal_error|converged)$|_q\d\d$"
)


def is_measure(column: str) -> bool:
    """Whether a results column is a gap measure (raw_/aligned_ prefix, not bookkeeping)."""
    for prefix in PREFIXES:
        if column.startswith(prefix) and not column.endswith("_std"):
            return not BOOKKEEPING.search(column[len(prefix) :])
    return False


def measure_columns(rows: Sequence[Mapping[str, object]]) -> tuple[list[str], list[str]]:
    """(varying, constant) gap-measure columns of the rows, in first-seen order."""
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if is_measure(c)]
    varying: list[str] = []
    constant: list[str] = []
    for c in columns:
        values = {round(float(r[c]), 12) for r in rows if finite_number(r.get(c))}  # type: ignore[arg-type]
        (varying if len(values) > 1 else constant).append(c)
    return varying, constant


def measure_target_pairs(
    rows: Sequence[Mapping[str, object]], measure: str, target: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row indices, measure values, target values) of the rows where both are finite numbers."""
    kept = [
        i
        for i, r in enumerate(rows)
        if finite_number(r.get(measure)) and finite_number(r.get(target))
    ]
    a = np.array([rows[i][measure] for i in kept], np.float64)
    b = np.array([rows[i][target] for i in kept], np.float64)
    return np.array(kept, np.int64), a, b


def finite_number(v: object) -> bool:
    """Whether v is a finite int or float (bool and NaN are not)."""
    return (
        isinstance(v, int | float | np.number)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    )


def rank_correlations(
    rows: Sequence[Mapping[str, object]], measures: Sequence[str], target: str
) -> list[dict[str, float | str]]:
    """Spearman rho (scipy.stats.spearmanr) and two-sided p-value of each measure vs `target`
    (e.g. "t2i_R@1"), one dict {"measure", "rho", "p_value", "n"} per measure, in order.

    Rows missing a measure or holding NaN for it (a measure skipped for that configuration) are
    left out of that measure's n. rho and p_value are NaN when n < 3 or either side is constant.
    """
    from scipy.stats import spearmanr  # scipy.stats takes seconds to import: only when used

    out: list[dict[str, float | str]] = []
    for name in measures:
        _, a, b = measure_target_pairs(rows, name, target)
        rho = p = math.nan
        if len(a) >= MIN_ROWS and np.ptp(a) > 0 and np.ptp(b) > 0:
            res = spearmanr(a, b)
            rho, p = float(res.statistic), float(res.pvalue)
        out.append({"measure": name, "rho": rho, "p_value": p, "n": len(a)})
    return out


def spearman_ci(
    a: np.ndarray, b: np.ndarray, *, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of Spearman rho over the units (pairs (a_i, b_i) resampled with
    replacement). Resamples where either side is constant have no rho and are dropped; (NaN,
    NaN) when fewer than MIN_ROWS units or under half the resamples have one. With ~15 units
    the interval is wide: that is the honest width of a 15-point correlation."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = len(a)
    if n < MIN_ROWS:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(reps, n))
    ra, rb = rankdata(a[idx], axis=1), rankdata(b[idx], axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    ok = norm > 0
    if ok.sum() < reps / 2:
        return math.nan, math.nan
    rho = (ra * rb).sum(axis=1)[ok] / norm[ok]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(rho, [tail, 100 - tail])
    return float(lo), float(hi)


def add_q_values(correlations: Sequence[dict[str, Any]]) -> None:
    """Set each correlation's "q_value": its "p_value" adjusted (Benjamini-Hochberg) over all
    of them, NaN where p is NaN. With dozens of tests some raw p < 0.05 are expected by chance."""
    from scipy.stats import false_discovery_control  # seconds to import: only when studied

    p = np.array([c["p_value"] for c in correlations], np.float64)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok])
    for c, qv in zip(correlations, q, strict=True):
        c["q_value"] = float(qv)
