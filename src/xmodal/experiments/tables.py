"""Result tables: a row per fitted aligner, mean +- std over seeds, as CSV, JSON, Markdown."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

GROUP = ("dataset", "encoder", "aligner", "metric")
HEADLINE = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "rsum")


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
            values = [m[col] for m in members]
            if (
                col in GROUP
                or col == "seed"
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            ):
                continue
            entry[col] = float(np.mean(values))
            entry[f"{col}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def markdown_table(summary: list[dict[str, Any]], columns=HEADLINE) -> str:
    """Markdown table of the summary; mean +- std where several seeds were run."""
    head = ["dataset", "encoder", "aligner", "metric", "seeds", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        cells = [str(row[k]) for k in head[:5]]
        for col in columns:
            std = row.get(f"{col}_std", 0.0)
            cells.append(f"{row[col]:.1f} ± {std:.1f}" if row["seeds"] > 1 else f"{row[col]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(folder: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "results.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=2))
    (folder / "results.md").write_text(markdown_table(summary) + "\n")
