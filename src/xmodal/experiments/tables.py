"""Result tables: a row per fitted aligner, and a summary per configuration (dataset, encoder,
aligner, metric): the mean over seeds, the std over seeds, the mean of the per-fit 95%
bootstrap CIs (sampling error of the test queries) and, where a configuration was run on
several splits, the std over splits; and the Markdown table of it."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

GROUP = ("dataset", "encoder", "aligner", "metric")
#: columns that tell repeats of one configuration apart (averaged over, never grouped by)
REPEATS = ("seed", "split_seed")
RECALL = re.compile(r"^(t2i|i2t)_R@(\d+)$")
CI = ("_ci_lo", "_ci_hi")


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: mean of every numeric column, `<col>_std` (sample std over seeds;
    absent with one seed) and, with several split seeds, `<col>_std_splits` (std of the split
    means; `<col>_std` is then the mean over splits of the std over seeds). CI bounds are
    averaged only."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in GROUP)].append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        entry["seeds"] = len({m.get("seed") for m in members})
        splits: dict[Any, list[dict]] = defaultdict(list)
        for m in members:
            splits[m.get("split_seed")].append(m)
        if len(splits) > 1:
            entry["splits"] = len(splits)
        for col in members[0]:
            values = [m.get(col) for m in members]
            if col in GROUP or col in REPEATS:
                continue
            if not _numeric(values):
                if isinstance(values[0], str) and len(set(values)) == 1 and col != "model":
                    entry[col] = values[0]  # a label shared by the group, e.g. kind or loss
                continue
            entry[col] = float(np.mean(np.asarray(values, dtype=float)))
            if not col.endswith(CI):
                entry |= _spreads(col, [[m[col] for m in s] for s in splits.values()])
        out.append(entry)
    return out


def _spreads(col: str, by_split: list[list[float]]) -> dict[str, float]:
    within = [float(np.std(v, ddof=1)) for v in by_split if len(v) > 1]
    out = {f"{col}_std": float(np.mean(within))} if within else {}
    if len(by_split) > 1:
        out[f"{col}_std_splits"] = float(np.std([np.mean(v) for v in by_split], ddof=1))
    return out


def headline_columns(summary: list[dict[str, Any]]) -> list[str]:
    """R@K of both directions (whichever K were evaluated), then RSUM."""
    keys = list(dict.fromkeys(k for row in summary for k in row))
    recall = [k for k in keys if RECALL.match(k)]
    return sorted(recall, key=lambda k: (k[:3] != "t2i", int(k.split("@")[1]))) + ["rsum"]


def cell(row: dict[str, Any], col: str) -> str:
    """ "mean ± std over seeds [CI]": std "n/a" with one seed, the CI being the mean of the
    per-fit 95% bootstrap intervals over test queries, and the std over splits when given."""
    value = row.get(col, np.nan)
    if not np.isfinite(value):
        return "n/a"
    std = row.get(f"{col}_std", np.nan)
    text = f"{value:.1f} ± {std:.1f}" if np.isfinite(std) else f"{value:.1f} ± n/a"
    if f"{col}_std_splits" in row:
        text += f" (splits ± {row[f'{col}_std_splits']:.1f})"
    if f"{col}_ci_lo" in row:
        text += f" [{row[f'{col}_ci_lo']:.1f}, {row[f'{col}_ci_hi']:.1f}]"
    return text


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """Markdown table of the summary: each cell is `cell` (mean ± std over seeds [95% CI])."""
    columns = headline_columns(summary)
    head = ["dataset", "encoder", "aligner", "metric", "seeds", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        cells = [str(row[k]) for k in head[:5]] + [cell(row, col) for col in columns]
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        "Cells: mean ± std over seeds (n/a with one seed) [mean of the per-fit 95% bootstrap "
        "CIs over test queries]; RSUM sums the R@K with K below the gallery size."
    )
    return "\n".join(lines) + "\n\n" + legend
