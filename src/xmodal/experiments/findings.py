"""Findings of an alignment study, stated from the numbers: which metric wins, whether the
learned metrics beat cosine, how training-free aligners compare, and which configuration k-fold
cross-validation on the training images selects (with `selection: {folds: k}`; else the
validation split); the test split is only reported, never used to choose.

Each finding describes test means; each comparison in it is backed by a paired test over the
same test queries (`xmodal.retrieval.compare`: bootstrap CI of the difference and a sign-flip
permutation p over test images, from the fits' per-query ranks), and says when the difference
is within the noise (its 95% CI contains 0)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodal.align.registry import aligner_traits
from xmodal.experiments.cross_model import CrossModelStudy
from xmodal.experiments.cross_model import markdown as cross_model_markdown
from xmodal.experiments.crossval import cv_column, cv_finite, cv_text, has_cv
from xmodal.experiments.run_folder import RunFolder
from xmodal.experiments.tables import GROUP, cell, markdown_table
from xmodal.files import CHECKSUM_SUFFIX, verify_checksum
from xmodal.retrieval.compare import paired_difference
from xmodal.retrieval.evaluate import PerQuery


def _is(row: dict[str, Any], trait: str) -> bool:
    """Whether the row's aligner kind has this trait (see aligner_traits)."""
    return bool(row.get("kind")) and aligner_traits(row["kind"])[trait]


def _training_free(row: dict[str, Any]) -> bool:
    return bool(row.get("kind")) and not (_is(row, "trained") or _is(row, "composite"))


def _load_ranks(path: Path) -> PerQuery:
    if Path(f"{path}{CHECKSUM_SUFFIX}").exists():
        verify_checksum(path)
    return PerQuery.load(path)


@dataclass
class Evidence:
    """The per-fit rows of a run and its folder, where each fit's per-query ranks are kept:
    what a paired test needs. Without them comparisons are described, not tested."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    folder: Path | None = None
    primary: str = "rsum"

    def ks(self) -> list[int]:
        found = {k for r in self.rows for k in r}
        return sorted({int(m.group(1)) for k in found if (m := re.match(r"t2i_R@(\d+)$", k))})

    def ranks(self, config: dict[str, Any]) -> list[PerQuery]:
        if self.folder is None:
            return []
        fits = [r for r in self.rows if all(r.get(k) == config[k] for k in GROUP)]
        run = RunFolder(self.folder)
        paths = [run.ranks(r["model"]) for r in fits if "model" in r]
        return [_load_ranks(p) for p in paths if p.exists()]

    def compare(self, a: dict[str, Any], b: dict[str, Any]) -> str:
        """ "paired test: ..." for a minus b on the primary score, or why there is none."""
        ra, rb = self.ranks(a), self.ranks(b)
        if not ra or not rb:
            return "not tested: no per-query ranks"
        try:
            t = paired_difference(ra, rb, self.primary, self.ks())
        except ValueError as e:
            return f"not tested: {e}"
        noise = "within the noise" if t["ci_lo"] <= 0 <= t["ci_hi"] else "beyond the noise"
        return (
            f"paired difference {t['difference']:+.1f} {_label(self.primary)}, 95% CI "
            f"[{t['ci_lo']:+.1f}, {t['ci_hi']:+.1f}], permutation p = {t['p_value']:.2g} over "
            f"{t['n_images']} test images: {noise}"
        )


def _fmt(row: dict[str, Any], col: str) -> str:
    return cell(row, col)


def _label(col: str) -> str:
    return "RSUM" if col == "rsum" else col


def _name(row: dict[str, Any]) -> str:
    return f"{row['aligner']} / {row['metric']}"


def _scored(summary: list[dict[str, Any]], col: str) -> list[dict[str, Any]]:
    """Rows with a finite `col` (a failed fit has none, and is never compared)."""
    return [r for r in summary if isinstance(r.get(col), float | int) and math.isfinite(r[col])]


def metric_wins(
    summary: list[dict[str, Any]], primary: str = "rsum"
) -> tuple[dict[str, int], list[tuple[dict, dict]]]:
    """For each trained aligner (aligner label, all metrics compared), the metric with the best
    mean test `primary`; returns wins per metric and each group's (winner, runner-up)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in _scored(summary, primary):
        if not _training_free(row):
            groups[(row["dataset"], row["encoder"], row["aligner"])].append(row)
    wins: dict[str, int] = defaultdict(int)
    pairs = []
    for group in groups.values():
        if len({r["metric"] for r in group}) > 1:
            first, second = sorted(group, key=lambda r: -r[primary])[:2]
            wins[first["metric"]] += 1
            pairs.append((first, second))
    return dict(wins), pairs


def findings(summary: list[dict[str, Any]], evidence: Evidence | None = None) -> list[str]:
    """Plain statements describing the test means, each with the test behind it."""
    ev = evidence or Evidence()
    col, label = ev.primary, _label(ev.primary)
    summary = _scored(summary, col)
    out = []
    wins, pairs = metric_wins(summary, col)
    if pairs:
        ranked = sorted(wins.items(), key=lambda kv: -kv[1])
        tally = ", ".join(f"{m} {w}" for m, w in ranked)
        tests = "; ".join(f"{_name(a)} vs {b['metric']}: {ev.compare(a, b)}" for a, b in pairs)
        out.append(
            f"Best mean test {label} per trained aligner ({len(pairs)} aligner/loss settings): "
            f"{tally}. Winner vs runner-up: {tests}."
        )
    cosine = [
        r
        for r in summary
        if r["metric"] == "cosine" and _is(r, "trained") and not _is(r, "learned_scorer")
    ]
    learned = [r for r in summary if _is(r, "trained") and _is(r, "learned_scorer")]
    if cosine and learned:
        best_c, best_l = max(cosine, key=lambda r: r[col]), max(learned, key=lambda r: r[col])
        verdict = "is above" if best_l[col] > best_c[col] else "is not above"
        out.append(
            f"The best learned metric, {_name(best_l)} ({label} {_fmt(best_l, col)}), {verdict} "
            f"the best cosine projection, {_name(best_c)} ({label} {_fmt(best_c, col)}); "
            f"{ev.compare(best_l, best_c)}."
        )
    free = [r for r in summary if _training_free(r)]
    trained = [r for r in summary if not _training_free(r)]
    if free and trained:
        best_f, best_t = max(free, key=lambda r: r[col]), max(trained, key=lambda r: r[col])
        out.append(
            f"Best training-free aligner: {_name(best_f)} ({label} {_fmt(best_f, col)}); best "
            f"trained one: {_name(best_t)} ({label} {_fmt(best_t, col)}); "
            f"{ev.compare(best_t, best_f)}."
        )
    out += grid_effects(summary, ev)
    if any(has_cv(r, col) for r in summary):
        out += cv_selection(summary, col)
        if any(cv_finite(r, col) for r in summary):
            return out
    with_val = [r for r in summary if isinstance(r.get(f"val_{col}"), float | int)]
    if with_val:
        chosen = max(with_val, key=lambda r: r[f"val_{col}"])
        recall = [c for c in ("t2i_R@1", "i2t_R@1") if c in chosen]
        quoted = "".join(f", {c} {_fmt(chosen, c)}" for c in recall)
        out.append(
            f"Selected on validation {label} ({chosen[f'val_{col}']:.1f}): {_name(chosen)}, with "
            f"test {label} {_fmt(chosen, col)}{quoted} over {chosen['seeds']} seed(s)."
        )
    return out


def cv_selection(summary: list[dict[str, Any]], primary: str) -> list[str]:
    """The configuration k-fold CV selects, and the setting it selects for each `grid` entry
    (over its metrics); configurations with a failed fold fit are never selected, and said."""
    label = _label(primary)
    rows = [r for r in summary if has_cv(r, primary)]
    finite = [r for r in rows if cv_finite(r, primary)]
    failed = [r for r in rows if not cv_finite(r, primary)]
    skipped = (
        f" ({len(failed)} configuration(s) with a failed fold fit not considered: "
        f"{', '.join(_name(r) for r in failed)})"
        if failed
        else ""
    )
    if not finite:
        return [f"No configuration has a CV score{skipped}: the validation split selects."]
    chosen = _best_cv(finite, primary)
    recall = [c for c in ("t2i_R@1", "i2t_R@1") if c in chosen]
    quoted = "".join(f", {c} {_fmt(chosen, c)}" for c in recall)
    out = [
        f"Selected by {chosen['cv_folds']}-fold CV on the training images "
        f"({cv_text(chosen, primary, label)}): {_name(chosen)}{_ties(chosen, finite, primary)}, "
        f"with test {label} {_fmt(chosen, primary)}{quoted} over {chosen['seeds']} seed(s)"
        f"{skipped}."
    ]
    grids: dict[tuple, list[dict]] = defaultdict(list)
    for row in finite:
        base, bracket, _ = row["aligner"].partition("[")
        if bracket:
            grids[(row["dataset"], row["encoder"], base)].append(row)
    for (_, _, base), members in grids.items():
        best = _best_cv(members, primary)
        out.append(
            f"Grid {base}: CV selects {_setting(best)} / {best['metric']} "
            f"({cv_text(best, primary, label)}){_ties(best, members, primary)}, with test "
            f"{label} {_fmt(best, primary)}."
        )
    return out


def _best_cv(rows: list[dict[str, Any]], primary: str) -> dict[str, Any]:
    return max(rows, key=lambda r: r[cv_column(primary)])


def _ties(chosen: dict[str, Any], rows: list[dict[str, Any]], primary: str) -> str:
    """ " (tied with ...)" when other configurations have the same CV score."""
    col = cv_column(primary)
    tied = [_name(r) for r in rows if r is not chosen and r[col] == chosen[col]]
    return f" (tied with {', '.join(tied)})" if tied else ""


def grid_effects(summary: list[dict[str, Any]], evidence: Evidence | None = None) -> list[str]:
    """For each `grid` entry (aligners named `base[setting]`), under cosine: the settings with
    the best and the worst mean test score, and the paired test of the two."""
    ev = evidence or Evidence()
    col, label = ev.primary, _label(ev.primary)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in _scored(summary, col):
        base, bracket, _ = row["aligner"].partition("[")
        if bracket and row["metric"] == "cosine":
            groups[(row["dataset"], row["encoder"], base)].append(row)
    out = []
    for (_, _, base), rows in groups.items():
        if len(rows) < 2:
            continue
        best, worst = max(rows, key=lambda r: r[col]), min(rows, key=lambda r: r[col])
        out.append(
            f"Grid {base} / cosine: best {_setting(best)} ({label} {_fmt(best, col)}), worst "
            f"{_setting(worst)} ({label} {_fmt(worst, col)}), {best[col] - worst[col]:+.1f}; "
            f"{ev.compare(best, worst)}."
        )
    return out


def _setting(row: dict[str, Any]) -> str:
    return row["aligner"].partition("[")[2].rstrip("]")


def findings_lines(summary: list[dict[str, Any]], evidence: Evidence | None = None) -> list[str]:
    """`findings` as markdown bullets, one block per dataset x encoder pair: statements never
    compare rows of different splits or encoders."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in summary:
        groups[(row["dataset"], row["encoder"])].append(row)
    lines = []
    for (dataset, encoder), rows in groups.items():
        if len(groups) > 1:
            lines += ["", f"### {dataset} / {encoder}", ""]
        lines += [f"- {s}" for s in findings(rows, evidence)]
    return lines


def findings_markdown(
    summary: list[dict[str, Any]],
    rows: Sequence[dict[str, Any]] = (),
    folder: Path | None = None,
    primary: str = "rsum",
    cross_model: Sequence[CrossModelStudy] = (),
) -> str:
    """findings.md; with the run's per-fit `rows` and `folder`, every comparison is tested;
    `cross_model` studies (runs over several encoder pairs) add what they say across pairs."""
    evidence = Evidence(list(rows), folder, primary)
    ordered = sorted(summary, key=lambda r: -r[primary] if math.isfinite(r[primary]) else 0)
    lines = [
        "# Findings",
        "",
        "Descriptions of mean test scores. Each comparison is tested on the same test queries "
        "(paired bootstrap 95% CI of the difference, sign-flip permutation p, over test "
        "images with their captions); a CI that contains 0 is within the noise.",
        "",
        *findings_lines(summary, evidence),
        "",
        *(cross_model_markdown(study) for study in cross_model),
        "## All configurations (test split, best first)",
        "",
        markdown_table(ordered),
    ]
    return "\n".join(lines) + "\n"
