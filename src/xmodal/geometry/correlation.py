"""Does a gap measure predict retrieval? Rank correlation across configurations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

MIN_ROWS = 3  # below this a rank correlation says nothing


def measure_target_pairs(
    rows: Sequence[Mapping[str, object]], measure: str, target: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row indices, measure values, target values) of the rows where both are finite numbers."""
    kept = [i for i, r in enumerate(rows) if _finite(r.get(measure)) and _finite(r.get(target))]
    a = np.array([rows[i][measure] for i in kept], np.float64)
    b = np.array([rows[i][target] for i in kept], np.float64)
    return np.array(kept, np.int64), a, b


def _finite(v: object) -> bool:
    return isinstance(v, int | float | np.number) and math.isfinite(float(v))


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
