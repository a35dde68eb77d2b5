"""Does the modality gap predict retrieval? Rank correlation of every gap measure with Recall@K
across the independent units of a run.

A configuration (dataset x encoder x aligner x metric, averaged over seeds) is not an
independent observation: a closed-form aligner gives the same vectors under every metric, and
the metrics of one aligner share its data, code and seeds. Correlating configurations counts
one aligner several times and makes p-values far too small (a null simulation of such a design
rejects ~1 in 3 true nulls at 5%). The unit is therefore one aligner of one dataset x encoder
pair: its measures and targets are the means over its configurations. Each geometry is taken in
the space its metric ranks (`<prefix>_space`); learned scorers have none and are left out.

The measures are the `raw_<measure>` / `aligned_<measure>` columns a run writes with
`geometry: true`. Sample sizes, parameters and quantiles are left out (they describe how a
measure was taken, or repeat its mean), and so is every column that is constant across the
configurations: a constant says nothing about which configuration retrieves better.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.experiments.config import ExperimentConfig
from xmodal.experiments.run_folder import RunFolder, slug
from xmodal.geometry.correlation import (
    add_q_values,
    finite_number,
    is_measure,
    measure_columns,
    rank_correlations,
)

if TYPE_CHECKING:
    from xmodal.experiments.runner import RunResult

SIGNIFICANT = 0.05
WEAK = 0.3  # |rho| below this reads as "no monotone relation"


@dataclass
class GapStudy:
    """One correlation per (target, measure) over `units` independent units (aligners) made of
    `configurations` rows; `constant` lists measures left out as constant."""

    configurations: int
    correlations: list[dict[str, Any]]
    constant: list[str] = field(default_factory=list)
    plots: dict[str, list[str]] = field(default_factory=dict)
    units: int = 0

    def tracking(self) -> list[str]:
        """Measures whose correlation is significant (BH-adjusted p < 0.05) with every target,
        with one sign throughout: the measures that track Recall@K on this run."""
        by_measure: dict[str, list[dict[str, Any]]] = {}
        for c in self.correlations:
            by_measure.setdefault(c["measure"], []).append(c)
        return [
            name
            for name, cs in by_measure.items()
            if all(c["q_value"] < SIGNIFICANT for c in cs)
            and len({math.copysign(1, c["rho"]) for c in cs}) == 1
        ]


UNIT = ("dataset", "encoder", "aligner")


def units(configurations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per aligner of each dataset x encoder pair: every numeric column averaged over
    its configurations (metrics), NaN left out; `configurations` counts them."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in configurations:
        groups.setdefault(tuple(row.get(k) for k in UNIT), []).append(row)
    out = []
    for key, rows in groups.items():
        unit: dict[str, Any] = dict(zip(UNIT, key, strict=True))
        unit["configurations"] = len(rows)
        unit["metric"] = "/".join(str(r.get("metric")) for r in rows)
        for col in dict.fromkeys(k for r in rows for k in r):
            values = [float(r[col]) for r in rows if col not in unit and finite_number(r.get(col))]
            if values:
                unit[col] = float(np.mean(values))
        out.append(unit)
    return out


def default_targets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """R@K at the smallest K evaluated, both directions, and RSUM."""
    ks = [int(c.split("@")[1]) for c in {k for r in rows for k in r} if re.match(r"t2i_R@\d+$", c)]
    k = min(ks, default=1)
    return [f"t2i_R@{k}", f"i2t_R@{k}", "rsum"]


def gap_study(
    configurations: Sequence[Mapping[str, Any]], targets: Sequence[str] | None = None
) -> GapStudy:
    """Spearman rho, p, n of every varying measure against each target over the independent
    units of the rows given (one row per configuration, e.g. a run's summary; see `units`).
    p values are also adjusted over all the tests of the study (Benjamini-Hochberg `q_value`):
    with dozens of tests some raw p < 0.05 are expected by chance."""
    rows = units(configurations)
    targets = default_targets(rows) if targets is None else targets
    varying, constant = measure_columns(rows)
    found = [
        {"target": target, **c}
        for target in targets
        for c in rank_correlations(rows, varying, target)
    ]
    add_q_values(found)
    for c in found:
        c["reading"] = reading(c)
    return GapStudy(len(configurations), found, constant, units=len(rows))


def reading(c: Mapping[str, Any]) -> str:
    """One line saying what a correlation means, e.g. "larger aligned_cka goes with higher
    rsum (rho=+0.81, n=6)" (n counts independent units)."""
    rho, n, measure, target = c["rho"], c["n"], c["measure"], c["target"]
    if not math.isfinite(rho):
        return f"{measure} vs {target}: not computable (n={n}, or one side constant)"
    stats = f"(rho={rho:+.2f}, n={n}"
    stats += ")" if c.get("q_value", 1.0) < SIGNIFICANT else ", not significant)"
    if abs(rho) < WEAK:
        return f"{measure} shows no monotone relation with {target} {stats}"
    direction = "higher" if rho > 0 else "lower"
    return f"larger {measure} goes with {direction} {target} {stats}"


def markdown(study: GapStudy) -> str:
    """gap.md: per target, the measures sorted by |rho|, then what tracks Recall@K."""
    lines = [
        f"# Gap measures vs retrieval ({study.units} aligners, {study.configurations} "
        "configurations)",
        "",
        "Spearman rank correlation across independent units: one unit per aligner (per dataset "
        "and encoder), its measures and recall averaged over its metrics, since configurations "
        "of one aligner share vectors or training and are not independent. n = units with the "
        f"measure; q = Benjamini-Hochberg adjusted p over all {len(study.correlations)} tests. "
        "Each geometry is measured in the space its metric ranks (L2-normalised for cosine, "
        "the aligned vectors for the distances); learned scorers rank no vector space.",
    ]
    for target in dict.fromkeys(c["target"] for c in study.correlations):
        rows = [c for c in study.correlations if c["target"] == target]
        rows.sort(key=lambda c: -abs(c["rho"]) if math.isfinite(c["rho"]) else 0.0)
        lines += ["", f"## {target}", "", "| measure | rho | p | q | n | reading |"]
        lines.append("|---|---:|---:|---:|---:|---|")
        lines += [
            f"| {c['measure']} | {c['rho']:+.2f} | {c['p_value']:.2g} | {c['q_value']:.2g} "
            f"| {c['n']} | {c['reading']} |"
            for c in rows
        ]
    lines += ["", conclusion(study)]
    return "\n".join(lines) + "\n"


def conclusion(study: GapStudy) -> str:
    """One sentence: which measures track every target, and which were constant."""
    tracking = study.tracking()
    targets = ", ".join(dict.fromkeys(c["target"] for c in study.correlations))
    if tracking:
        text = f"Tracking {targets} (q < {SIGNIFICANT}, one sign): {', '.join(tracking)}."
    else:
        text = f"No measure tracks all of {targets} at q < {SIGNIFICANT} on this run."
    if study.constant:
        text += f" Constant across units (not studied): {', '.join(study.constant)}."
    return text


def plot_study(
    configurations: Sequence[Mapping[str, Any]],
    measures: Sequence[str],
    folder: Path,
    q_values: Mapping[tuple[str, str], float],
    targets: Sequence[str] = ("rsum",),
) -> dict[str, list[Path]]:
    """Measure-vs-recall scatter plots, one figure per target: folder/gap_<target>.png/.svg;
    `q_values` by (measure, target): the study's adjusted p, shown in each panel's title."""
    from xmodal.geometry.plots import plot_measures_vs_recall

    labelled = [{**r, "label": f"{r.get('aligner')}/{r.get('metric')}"} for r in configurations]
    return {
        t: plot_measures_vs_recall(
            labelled,
            measures,
            t,
            folder / f"gap_{slug(t)}",
            q_values={m: q for (m, target), q in q_values.items() if target == t},
            label_key="label",
        )
        for t in targets
    }


def write_gap_study(
    run_dir: str | Path,
    targets: Sequence[str] | None = None,
    plot_targets: Sequence[str] = ("rsum",),
) -> GapStudy:
    """Study a run folder's results.json summary; writes gap.json, gap.md and, per target in
    `plot_targets`, the measure-vs-recall scatters plots/gap_<target>.png/.svg (one panel per
    measure; RSUM alone by default: it sums every recall, and each figure takes seconds)."""
    run = RunFolder(run_dir)
    configurations = run.read_results()["summary"]
    if not any(is_measure(k) for row in configurations for k in row):
        raise ValueError(
            f"{run_dir}: the run has no gap measures; run its config with `geometry: true` "
            "(or `xmodal gap CONFIG`) to study the gap"
        )
    study = gap_study(configurations, targets)
    measures = list(dict.fromkeys(c["measure"] for c in study.correlations))
    if plot_targets and measures and study.units >= 3:
        q = {(c["measure"], c["target"]): c["q_value"] for c in study.correlations}
        found = plot_study(units(configurations), measures, run.plots, q, plot_targets)
        study.plots = {t: [run.relative(p) for p in ps] for t, ps in found.items()}
    run.write_text(run.gap_json, json.dumps(_nan_to_none(asdict(study)), indent=2))
    run.write_text(run.gap_md, markdown(study))
    return study


def run_gap_study(
    config: ExperimentConfig, out_dir: str | Path | None = None, progress: bool = True
) -> tuple[RunResult, GapStudy]:
    """Run a config with geometry forced on, then study the new run folder."""
    from xmodal.experiments.runner import run_experiment  # torch and the encoders: only here

    result = run_experiment(config.model_copy(update={"geometry": True}), out_dir, progress)
    return result, write_gap_study(result.folder)


def _nan_to_none(study: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON has no NaN: a correlation that cannot be computed is written as null."""
    for c in study["correlations"]:
        for k in ("rho", "p_value", "q_value"):
            c[k] = c[k] if math.isfinite(c[k]) else None
    return study


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's results ({"runs": rows, "summary": rows}), checked."""
    return RunFolder(run_dir).read_results()


def load_study(run_dir: str | Path) -> GapStudy | None:
    """gap.json of a run folder, or None when the gap study was not run there."""
    run = RunFolder(run_dir)
    path = run.gap_json
    if not path.exists():
        return None
    try:
        study = GapStudy(**json.loads(run.read_text(path)))
        for c in study.correlations:
            for k in ("rho", "p_value", "q_value"):
                c[k] = math.nan if c[k] is None else float(c[k])
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: not a gap study written by xmodal ({e})") from None
    return study
