"""Across encoder pairs: does the modality gap, the Wasserstein distance in particular, predict
retrieval? And does the Wasserstein distance measure the gap at all?

The unit is one encoder pair (image model x text model) of a dataset: pairs differ in their
models, not only in a seed, so each is one observation. A system (one aligner under one metric,
its seeds averaged) that ran on every pair gives one point per pair; each gap measure is
rank-correlated (Spearman) with each target across the pairs, with a percentile bootstrap CI
over pairs and a Benjamini-Hochberg q over every test of the study.

Raw measures describe the encoders' own outputs and are the same for every system of a pair.
Two separately trained encoders rarely share a dimension, so the raw measures that need one space
(centroid gap, exact / Sinkhorn / Gaussian W2, separability) exist only in each aligner's shared
space (`aligned_*`); the raw ones are those that compare spaces of any dimension (CKA, mutual
kNN, Gromov-Wasserstein).

"The Wasserstein distance measures the modality gap" is tested as stated: across pairs, does
W2 (exact, Sinkhorn, Gaussian) rise and fall with the centroid gap in the same space? It holds
here when the bootstrap CI of that correlation lies above zero for every system.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from xmodal.geometry.correlation import (
    add_q_values,
    finite_number,
    measure_columns,
    measure_target_pairs,
    rank_correlations,
    spearman_ci,
)

MIN_PAIRS = 4  # fewer encoder pairs cannot rank-correlate anything worth stating
GAP = "aligned_gap"
WASSERSTEIN = (
    "aligned_wasserstein_exact",
    "aligned_wasserstein_sinkhorn",
    "aligned_wasserstein_gaussian",
)


@dataclass
class CrossModelStudy:
    """Correlations across the encoder pairs of one dataset.

    pairs: one row per encoder pair with its raw measures and, per system, its targets and
    aligned measures (`<system>: <column>`); correlations: {system, measure, target, rho,
    ci_lo, ci_hi, p_value, q_value, n}; wasserstein_gap: the same for W2 against the gap."""

    dataset: str
    systems: list[str]
    targets: list[str]
    pairs: list[dict[str, Any]]
    correlations: list[dict[str, Any]]
    wasserstein_gap: list[dict[str, Any]]
    constant: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A strict-JSON dict (NaN written as null)."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CrossModelStudy:
        study = cls(**data)
        for c in [*study.correlations, *study.wasserstein_gap]:
            for k in ("rho", "ci_lo", "ci_hi", "p_value", "q_value"):
                c[k] = math.nan if c.get(k) is None else float(c[k])
        return study

    def points(self, system: str) -> list[dict[str, Any]]:
        """One point per encoder pair as `system` sees it: raw measures and its own columns."""
        return [_system_point(p, system) for p in self.pairs]

    def best_predictor(self, target: str = "rsum") -> tuple[str, float] | None:
        """The measure with the largest mean |rho| against `target` over the systems, and that
        mean; None when no correlation could be computed."""
        by: dict[str, list[float]] = {}
        for c in self.correlations:
            if c["target"] == target and math.isfinite(c["rho"]):
                by.setdefault(c["measure"], []).append(abs(c["rho"]))
        if not by:
            return None
        name = max(by, key=lambda m: float(np.mean(by[m])))
        return name, float(np.mean(by[name]))

    def wasserstein_holds(self) -> bool | None:
        """Whether exact W2 tracks the centroid gap for every system (CI above 0); None when
        it could not be tested."""
        exact = [c for c in self.wasserstein_gap if c["measure"] == WASSERSTEIN[0]]
        if not exact or not all(math.isfinite(c["ci_lo"]) for c in exact):
            return None
        return all(c["ci_lo"] > 0 for c in exact)


def system_name(row: Mapping[str, Any]) -> str:
    return f"{row['aligner']} / {row['metric']}"


def cross_model_studies(
    summary: Sequence[Mapping[str, Any]], targets: Sequence[str] | None = None
) -> list[CrossModelStudy]:
    """One study per dataset of a run summary that holds at least MIN_PAIRS encoder pairs with
    gap measures; none for a run of one pair (the gap study compares aligners there)."""
    by_dataset: dict[str, list[Mapping[str, Any]]] = {}
    for row in summary:
        by_dataset.setdefault(str(row["dataset"]), []).append(row)
    studies = []
    for dataset, rows in by_dataset.items():
        if len({r["encoder"] for r in rows}) >= MIN_PAIRS and measure_columns(rows)[0]:
            studies.append(cross_model_study(dataset, rows, targets))
    return studies


def cross_model_study(
    dataset: str, rows: Sequence[Mapping[str, Any]], targets: Sequence[str] | None = None
) -> CrossModelStudy:
    """The study of one dataset's summary rows (one per encoder x aligner x metric)."""
    ok = [r for r in rows if finite_number(r.get("rsum"))]  # a failed fit holds NaN
    targets = list(targets or _default_targets(ok))
    encoders = list(dict.fromkeys(r["encoder"] for r in ok))
    systems = [s for s in dict.fromkeys(map(system_name, ok)) if _on_every(ok, s, encoders)]
    pairs = _pair_table(ok, encoders, systems, targets)
    varying, constant = measure_columns(pairs)
    raw = [m for m in varying if m.startswith("raw_")]
    found, link = [], []
    for system in systems:
        points = [_system_point(p, system) for p in pairs]
        aligned = [
            m for m in dict.fromkeys(k for p in points for k in p) if m.startswith("aligned_")
        ]
        aligned = [m for m in aligned if m in measure_columns(points)[0]]
        for target in targets:
            found += _correlate(points, [*raw, *aligned], target, system)
        for w in WASSERSTEIN:
            if w in aligned and GAP in aligned:
                link += _correlate(points, [w], GAP, system)
    add_q_values([*found, *link])
    return CrossModelStudy(dataset, systems, targets, pairs, found, link, constant)


def _default_targets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    ks = sorted({int(m[1]) for r in rows for k in r if (m := re.fullmatch(r"t2i_R@(\d+)", k))})
    k = ks[0] if ks else 1
    return [f"t2i_R@{k}", f"i2t_R@{k}", "rsum"]


def _on_every(rows: Sequence[Mapping[str, Any]], system: str, encoders: list[str]) -> bool:
    return {r["encoder"] for r in rows if system_name(r) == system} == set(encoders)


def _pair_table(
    rows: Sequence[Mapping[str, Any]],
    encoders: list[str],
    systems: list[str],
    targets: list[str],
) -> list[dict[str, Any]]:
    """One row per encoder pair: its raw measures, then `<system>: <column>` for each
    system's targets and aligned measures."""
    table = []
    for encoder in encoders:
        mine = [r for r in rows if r["encoder"] == encoder]
        pair: dict[str, Any] = {"encoder": encoder}
        pair |= {k: v for k, v in mine[0].items() if k.startswith("raw_") and finite_number(v)}
        for r in mine:
            if (system := system_name(r)) in systems:
                for k, v in r.items():
                    if (k in targets or k.startswith("aligned_")) and finite_number(v):
                        pair[f"{system}: {k}"] = v
        table.append(pair)
    return table


def _system_point(pair: Mapping[str, Any], system: str) -> dict[str, Any]:
    """A pair's row seen by one system: raw measures, and the system's columns unprefixed."""
    head = f"{system}: "
    point = {k: v for k, v in pair.items() if k.startswith("raw_") or k == "encoder"}
    point |= {k.removeprefix(head): v for k, v in pair.items() if k.startswith(head)}
    return point


def _correlate(
    points: Sequence[Mapping[str, Any]], measures: Sequence[str], target: str, system: str
) -> list[dict[str, Any]]:
    out = []
    for c in rank_correlations(points, measures, target):
        _, a, b = measure_target_pairs(points, str(c["measure"]), target)
        lo, hi = spearman_ci(a, b) if math.isfinite(float(c["rho"])) else (math.nan, math.nan)
        out.append({"system": system, "target": target, **c, "ci_lo": lo, "ci_hi": hi})
    return out


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _interval(c: Mapping[str, Any]) -> str:
    if not math.isfinite(c["rho"]):
        return f"not computable (n = {c['n']})"
    ci = f", 95% CI [{c['ci_lo']:+.2f}, {c['ci_hi']:+.2f}]" if math.isfinite(c["ci_lo"]) else ""
    return f"rho = {c['rho']:+.2f}{ci}, q = {_cell(c['q_value'], '.2g')}, n = {c['n']}"


def findings_lines(study: CrossModelStudy) -> list[str]:
    """What the study says, as findings.md bullets, with its numbers."""
    tests = len(study.correlations) + len(study.wasserstein_gap)
    out = [
        f"Across {len(study.pairs)} encoder pairs on {study.dataset} (one point per pair; "
        f"Spearman rho with a bootstrap 95% CI over pairs; q adjusted over {tests} tests):"
    ]
    out += _wasserstein_lines(study)
    best = study.best_predictor()
    if best is not None:
        name, mean_rho = best
        mine = [c for c in study.correlations if c["measure"] == name and c["target"] == "rsum"]
        detail = "; ".join(f"{c['system']}: {_interval(c)}" for c in mine)
        out.append(
            f"Best predictor of RSUM across pairs: {name} (mean |rho| {mean_rho:.2f} over "
            f"{len(mine)} system(s); {detail})."
        )
    for target in study.targets:
        clear: dict[str, list[str]] = {}
        for c in sorted(study.correlations, key=lambda c: -abs(c["rho"])):
            if c["target"] == target and _excludes_zero(c):
                clear.setdefault(c["measure"], []).append(f"{c['system']} {c['rho']:+.2f}")
        listed = "; ".join(f"{m} ({', '.join(v)})" for m, v in clear.items()) or "none"
        out.append(f"Measures whose CI excludes 0 against {target}, strongest first: {listed}.")
    return out


def _excludes_zero(c: Mapping[str, Any]) -> bool:
    return math.isfinite(c["ci_lo"]) and (c["ci_lo"] > 0 or c["ci_hi"] < 0)


VERDICTS = {
    True: "holds here: exact W2 rises with the centroid gap across pairs for every system "
    "(CI above 0)",
    False: "does not hold for every system here: for at least one, the CI of exact W2 against "
    "the centroid gap reaches 0",
    None: "could not be settled: a correlation was not computable",
}


def _wasserstein_lines(study: CrossModelStudy) -> list[str]:
    if not study.wasserstein_gap:
        return [
            "Whether W2 measures the gap could not be tested: no system has both W2 and the "
            "centroid gap in one space."
        ]
    detail = "; ".join(
        f"{c['measure'].removeprefix('aligned_')} vs gap, {c['system']}: {_interval(c)}"
        for c in study.wasserstein_gap
    )
    verdict = VERDICTS[study.wasserstein_holds()]
    out = [f'"The Wasserstein distance measures the modality gap" {verdict} ({detail}).']
    retrieval = [
        c for c in study.correlations if c["measure"] == WASSERSTEIN[0] and c["target"] == "rsum"
    ]
    if retrieval:
        said = "; ".join(f"{c['system']}: {_interval(c)}" for c in retrieval)
        out.append(f"Exact W2 against RSUM across pairs (lower W2, better retrieval?): {said}.")
    return out


def _cell(value: float, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "–"


def markdown(study: CrossModelStudy) -> str:
    """The study as markdown: the findings, then every correlation."""
    lines = [f"## Across encoder pairs: {study.dataset}", ""]
    lines += [f"- {s}" for s in findings_lines(study)]
    lines += ["", "| system | measure | target | rho | 95% CI | q | n |"]
    lines.append("|---|---|---|---:|---|---:|---:|")
    for c in [*study.correlations, *study.wasserstein_gap]:
        ci = f"[{_cell(c['ci_lo'], '+.2f')}, {_cell(c['ci_hi'], '+.2f')}]"
        lines.append(
            f"| {c['system']} | {c['measure']} | {c['target']} | {_cell(c['rho'], '+.2f')} "
            f"| {ci} | {_cell(c['q_value'], '.2g')} | {c['n']} |"
        )
    return "\n".join(lines) + "\n"
