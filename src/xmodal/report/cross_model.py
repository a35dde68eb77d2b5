"""The report's view of a run over many encoder pairs: the cross-model study's scatters.

`xmodal.experiments.cross_model` computes the study when a run ends and the run folder keeps it
(cross_model.json); this module reads it back and draws one point per encoder pair.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from xmodal.experiments.cross_model import GAP, WASSERSTEIN, CrossModelStudy
from xmodal.experiments.run_folder import RunFolder, slug
from xmodal.report.figures import Picture

#: the measures the scatters show, when the study has them (the table lists every measure)
SHOWN = (
    "raw_cka",
    "raw_mutual_knn",
    "raw_gromov_wasserstein",
    GAP,
    *WASSERSTEIN,
    "aligned_separability",
    "aligned_cka",
    "aligned_mutual_knn",
)
COLOURS = "one colour per system (aligner / metric), named in each panel's legend."


def load_studies(run_dir: str | Path) -> list[CrossModelStudy]:
    """The run's cross-model studies (checksum verified); none when it has none."""
    run = RunFolder(run_dir)
    if not run.cross_model.exists():
        return []
    try:
        return [CrossModelStudy.from_json(s) for s in run.read_json(run.cross_model)]
    except (TypeError, KeyError) as e:
        raise ValueError(f"{run.cross_model}: not a cross-model study ({e})") from None


def pictures(studies: list[CrossModelStudy], folder: Path) -> list[Picture]:
    """Per study: each shown measure against RSUM and against t2i R@1, and W2 against the
    centroid gap."""
    out = []
    for study in studies:
        by_system = {s: study.points(s) for s in study.systems}
        found = {c["measure"] for c in study.correlations}
        measures = [m for m in SHOWN if m in found]
        for target in ("rsum", study.targets[0]):
            if measures and target in study.targets:
                out.append(_scatter(study, by_system, measures, target, folder))
        link = [m for m in WASSERSTEIN if any(c["measure"] == m for c in study.wasserstein_gap)]
        if link:
            out.append(_scatter(study, by_system, link, GAP, folder))
    return out


def _scatter(
    study: CrossModelStudy,
    by_system: dict[str, list[dict[str, Any]]],
    measures: list[str],
    target: str,
    folder: Path,
) -> Picture:
    from xmodal.geometry.plots import plot_across_pairs

    tests = study.wasserstein_gap if target == GAP else study.correlations
    stats = {(c["system"], c["measure"]): _rho(c) for c in tests if c["target"] == target}
    path = folder / f"cross_model_{slug(study.dataset)}_{slug(target)}"
    files = plot_across_pairs(by_system, measures, target, path, stats=stats)
    caption = (
        f"One dot per encoder pair of {study.dataset}, labelled image+text model; the legend "
        "gives each system's Spearman ρ across pairs with its bootstrap 95% CI."
    )
    title = f"Across encoder pairs: measures vs {target}"
    return Picture("cross_model", title, caption, files, COLOURS)


def _rho(c: dict[str, Any]) -> str:
    if not math.isfinite(c["rho"]):
        return "ρ not computable"
    return f"ρ {c['rho']:+.2f} [{c['ci_lo']:+.2f}, {c['ci_hi']:+.2f}]"
