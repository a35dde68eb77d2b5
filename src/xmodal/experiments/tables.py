"""Result tables: a row per fitted aligner, mean +- std over seeds, as CSV, JSON, Markdown."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

GROUP = ("dataset", "encoder", "aligner", "metric")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (sample) std of every numeric column over the seeds of each configuration."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in GROUP)].append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        entry["seeds"] = len(members)
        for col in members[0]:
            values = [m.get(col) for m in members]
            if col in GROUP or col == "seed":
                continue
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                if isinstance(values[0], str) and len(set(values)) == 1 and col != "model":
                    entry[col] = values[0]  # a label shared by the group, e.g. kind or loss
                continue
            numbers = np.asarray(values, np.float64)
            entry[col] = float(np.mean(numbers))
            entry[f"{col}_std"] = float(np.std(numbers, ddof=1)) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def headline_columns(summary: list[dict[str, Any]]) -> list[str]:
    """R@K of both directions (whichever K were evaluated), then RSUM."""
    keys = list(dict.fromkeys(k for row in summary for k in row))
    recall = [k for k in keys if k.startswith(("t2i_R@", "i2t_R@")) and not k.endswith("_std")]
    return sorted(recall, key=lambda k: (k[:3] != "t2i", int(k.split("@")[1]))) + ["rsum"]


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """Markdown table of the summary; mean +- std where several seeds were run."""
    columns = headline_columns(summary)
    head = ["dataset", "encoder", "aligner", "metric", "seeds", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        cells = [str(row[k]) for k in head[:5]]
        for col in columns:
            std = row.get(f"{col}_std", 0.0)
            cells.append(f"{row[col]:.1f} ± {std:.1f}" if row["seeds"] > 1 else f"{row[col]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
