"""Findings of an alignment study, stated from the numbers: which metric wins, whether the
learned metrics beat cosine, how training-free aligners compare, and which configuration the
validation split selects (the test split is only reported, never used to choose)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from xmodal.align.registry import aligner_traits
from xmodal.experiments.tables import markdown_table


def _is(row: dict[str, Any], trait: str) -> bool:
    """Whether the row's aligner kind has this trait (see aligner_traits)."""
    return bool(row.get("kind")) and aligner_traits(row["kind"])[trait]


def _training_free(row: dict[str, Any]) -> bool:
    return bool(row.get("kind")) and not (_is(row, "trained") or _is(row, "composite"))


def _fmt(row: dict[str, Any], col: str = "rsum") -> str:
    return f"{row[col]:.1f} ± {row.get(f'{col}_std', 0.0):.1f}"


def _name(row: dict[str, Any]) -> str:
    return f"{row['aligner']} / {row['metric']}"


def _distinct(a: dict[str, Any], b: dict[str, Any], col: str = "rsum") -> bool:
    """Means further apart than the two standard deviations together."""
    return abs(a[col] - b[col]) > a.get(f"{col}_std", 0.0) + b.get(f"{col}_std", 0.0)


def metric_wins(summary: list[dict[str, Any]]) -> tuple[dict[str, int], int]:
    """For each trained aligner (aligner label, all metrics compared), the metric with the best
    mean test RSUM; returns wins per metric and the number of groups."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in summary:
        if not _training_free(row):
            groups[(row["dataset"], row["encoder"], row["aligner"])].append(row)
    wins: dict[str, int] = defaultdict(int)
    compared = [g for g in groups.values() if len({r["metric"] for r in g}) > 1]
    for group in compared:
        wins[max(group, key=lambda r: r["rsum"])["metric"]] += 1
    return dict(wins), len(compared)


def findings(summary: list[dict[str, Any]]) -> list[str]:
    """Plain statements, each backed by the numbers it quotes."""
    out = []
    wins, n = metric_wins(summary)
    if n:
        ranked = sorted(wins.items(), key=lambda kv: -kv[1])
        tally = ", ".join(f"{m} {w}" for m, w in ranked)
        out.append(
            f"Best metric per trained aligner ({n} aligner/loss settings): {tally}. "
            f"{ranked[0][0]} wins most often."
        )
    cosine = [
        r
        for r in summary
        if r["metric"] == "cosine" and _is(r, "trained") and not _is(r, "learned_scorer")
    ]
    learned = [r for r in summary if _is(r, "trained") and _is(r, "learned_scorer")]
    if cosine and learned:
        best_c = max(cosine, key=lambda r: r["rsum"])
        best_l = max(learned, key=lambda r: r["rsum"])
        verdict = "beats" if best_l["rsum"] > best_c["rsum"] else "does not beat"
        sure = "" if _distinct(best_l, best_c) else " (within one standard deviation: a tie)"
        out.append(
            f"The best learned metric, {_name(best_l)} (RSUM {_fmt(best_l)}), {verdict} "
            f"the best cosine projection, {_name(best_c)} (RSUM {_fmt(best_c)}){sure}."
        )
    free = [r for r in summary if _training_free(r)]
    trained = [r for r in summary if not _training_free(r)]
    if free and trained:
        best_f = max(free, key=lambda r: r["rsum"])
        best_t = max(trained, key=lambda r: r["rsum"])
        gap = best_t["rsum"] - best_f["rsum"]
        out.append(
            f"Best training-free aligner: {_name(best_f)} (RSUM {_fmt(best_f)}), "
            f"{abs(gap):.1f} RSUM {'below' if gap > 0 else 'above'} the best trained one, "
            f"{_name(best_t)} (RSUM {_fmt(best_t)})."
        )
    out += grid_effects(summary)
    with_val = [r for r in summary if "val_rsum" in r]
    if with_val:
        chosen = max(with_val, key=lambda r: r["val_rsum"])
        k = min(int(c.split("@")[1]) for c in chosen if c.startswith("t2i_R@") and "_std" not in c)
        out.append(
            f"Selected on validation RSUM ({chosen['val_rsum']:.1f}): {_name(chosen)}, with test "
            f"R@{k} text->image {_fmt(chosen, f't2i_R@{k}')} and image->text "
            f"{_fmt(chosen, f'i2t_R@{k}')}, RSUM {_fmt(chosen)} over {chosen['seeds']} seed(s)."
        )
    return out


def grid_effects(summary: list[dict[str, Any]]) -> list[str]:
    """For each `grid` entry (aligners named `base[setting]`), under cosine: the settings with
    the best and the worst mean test RSUM, and how far apart they are."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in summary:
        base, bracket, _ = row["aligner"].partition("[")
        if bracket and row["metric"] == "cosine":
            groups[(row["dataset"], row["encoder"], base)].append(row)
    out = []
    for (_, _, base), rows in groups.items():
        if len(rows) < 2:
            continue
        best, worst = max(rows, key=lambda r: r["rsum"]), min(rows, key=lambda r: r["rsum"])
        sure = "" if _distinct(best, worst) else " (within one standard deviation)"
        out.append(
            f"Grid {base} / cosine: best {_setting(best)} (RSUM {_fmt(best)}), worst "
            f"{_setting(worst)} (RSUM {_fmt(worst)}), {best['rsum'] - worst['rsum']:+.1f}{sure}."
        )
    return out


def _setting(row: dict[str, Any]) -> str:
    return row["aligner"].partition("[")[2].rstrip("]")


def findings_lines(summary: list[dict[str, Any]]) -> list[str]:
    """`findings` as markdown bullets, one block per dataset x encoder pair: statements never
    compare rows of different splits or encoders."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in summary:
        groups[(row["dataset"], row["encoder"])].append(row)
    lines = []
    for (dataset, encoder), rows in groups.items():
        if len(groups) > 1:
            lines += ["", f"### {dataset} / {encoder}", ""]
        lines += [f"- {s}" for s in findings(rows)]
    return lines


def findings_markdown(summary: list[dict[str, Any]]) -> str:
    ordered = sorted(summary, key=lambda r: -r["rsum"])
    lines = [
        "# Findings",
        "",
        *findings_lines(summary),
        "",
        "## All configurations (test split, mean ± std over seeds, best first)",
        "",
        markdown_table(ordered),
    ]
    return "\n".join(lines) + "\n"
