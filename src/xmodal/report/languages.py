"""The report's per-language view, for runs whose test captions come in several languages
(languages.json, written by `xmodal.experiments.languages`): per dataset x encoder pair, the
text -> image R@1 of every configuration in every reported language, as a table and as a chart
with the 95% bootstrap CIs as error bars."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xmodal.experiments.languages import ALL, COLUMN, base_label, summarize_lines
from xmodal.experiments.run_folder import RunFolder, slug
from xmodal.geometry.plots import save_figure
from xmodal.report.figures import Picture

MARKERS = ("o", "s", "^", "D", "v", "P")  # one per training-language variant
SHAPES = dict(
    zip(
        MARKERS,
        ("circles", "squares", "triangles", "diamonds", "down-triangles", "crosses"),
        strict=True,
    )
)
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


@dataclass
class LanguageTable:
    """One dataset x encoder pair: its configurations (series) and their scores per language,
    languages sorted by the mean over configurations, best first."""

    dataset: str
    encoder: str
    series: list[str]  # configuration labels: "aligner / metric"
    languages: list[str]
    captions: dict[str, float]  # test captions per language (mean over splits)
    scores: dict[tuple[str, str], Mapping[str, Any]]  # (series, language) -> summary line
    variants: dict[str, str]  # series -> its training-language variant
    bases: dict[str, str]  # series -> its aligner / metric without the variant


def load_languages(folder: str | Path) -> dict[str, Any] | None:
    """languages.json of a run folder (checksum verified), or None when the run has none."""
    run = RunFolder(folder)
    if not run.languages_json.exists():
        return None
    data = run.read_json(run.languages_json)
    if not isinstance(data, dict) or not isinstance(data.get("lines"), list):
        raise ValueError(f"{run.languages_json}: not a per-language file with a 'lines' list")
    return data


def language_tables(lines: Sequence[Mapping[str, Any]], score: str) -> list[LanguageTable]:
    """The summary lines (mean over seeds and splits) grouped per dataset x encoder pair."""
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in summarize_lines(lines):
        pairs[line["dataset"], line["encoder"]].append(line)
    return [_language_table(*pair, members, score) for pair, members in pairs.items()]


def _language_table(
    dataset: str, encoder: str, members: list[dict[str, Any]], score: str
) -> LanguageTable:
    several_metrics = len({m["metric"] for m in members}) > 1
    table = LanguageTable(dataset, encoder, [], [], {}, {}, {}, {})
    by_language = defaultdict(list)
    for m in members:
        series = f"{m['aligner']} / {m['metric']}" if several_metrics else m["aligner"]
        variant = m.get(COLUMN) or ALL
        base = base_label(m["aligner"], variant)
        table.scores[series, m["language"]] = m
        table.captions[m["language"]] = m["n_captions"]
        table.variants[series] = variant
        table.bases[series] = f"{base} / {m['metric']}" if several_metrics else base
        table.series += [] if series in table.series else [series]
        by_language[m["language"]].append(m[score])
    table.languages = sorted(by_language, key=lambda g: (-np.mean(by_language[g]), g))
    return table


def cell(line: Mapping[str, Any] | None, score: str) -> str:
    """ "R [lo, hi]" of a summary line, "–" when the configuration has no such line."""
    if line is None:
        return "–"
    return f"{line[score]:.1f} [{line[f'{score}_ci_lo']:.1f}, {line[f'{score}_ci_hi']:.1f}]"


def plot_language_scores(table: LanguageTable, score: str, folder: Path) -> Picture:
    """One point per language and configuration with its 95% CI; a colour per aligner, a
    marker per training-language variant."""
    bases = list(dict.fromkeys(table.bases.values()))
    variants = list(dict.fromkeys(table.variants.values()))
    x = np.arange(len(table.languages))
    width = min(0.8, 0.18 * len(table.series))
    offsets = np.linspace(-width / 2, width / 2, len(table.series))
    fig = Figure(figsize=(max(6.0, 0.5 * len(x) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for offset, series in zip(offsets, table.series, strict=True):
        lines = [table.scores.get((series, g)) for g in table.languages]
        at = [i for i, line in enumerate(lines) if line is not None]
        y = np.array([lines[i][score] for i in at])  # type: ignore[index]
        lo = np.array([lines[i][f"{score}_ci_lo"] for i in at])  # type: ignore[index]
        hi = np.array([lines[i][f"{score}_ci_hi"] for i in at])  # type: ignore[index]
        colour = COLOURS[bases.index(table.bases[series]) % len(COLOURS)]
        marker = MARKERS[variants.index(table.variants[series]) % len(MARKERS)]
        ax.errorbar(
            x[at] + offset, y, yerr=[y - lo, hi - y], fmt=marker, color=colour, ms=5,
            capsize=2, elinewidth=0.8, label=series,
        )  # fmt: skip
    ax.set_xticks(x, table.languages, fontsize=8)
    if len(x) > 24:  # short tags fit level up to about two dozen
        ax.tick_params(axis="x", labelrotation=90)
    ax.set_ylabel(f"{score} (%)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    handles = _legend(bases, variants)
    fig.legend(handles=handles, fontsize=7, ncols=min(len(handles), 6), loc="outside lower center")
    name = f"languages_{slug(table.dataset)}__{slug(table.encoder)}"
    title = f"{score} per caption language: {table.encoder} on {table.dataset}"
    ax.set_title(title, fontsize=10)
    return Picture(
        "languages",
        title,
        "Text → image, each test caption of a language queried against every test image; "
        "languages sorted by the mean over configurations; bars: 95% bootstrap CIs over the "
        "language's captions (one split: they do not include the spread over seeds or splits).",
        save_figure(fig, folder / name),
        _colour_words(bases, variants),
    )


def _legend(bases: list[str], variants: list[str]) -> list[Line2D]:
    handles = [
        Line2D([], [], color=COLOURS[i % len(COLOURS)], marker="o", ls="", label=b)
        for i, b in enumerate(bases)
    ]
    if len(variants) > 1:
        handles += [
            Line2D(
                [], [], color="grey", marker=MARKERS[i % len(MARKERS)], ls="", label=f"train {v}"
            )
            for i, v in enumerate(variants)
        ]
    return handles


def _colour_words(bases: list[str], variants: list[str]) -> str:
    colours = ", ".join(f"{COLOURS[i % len(COLOURS)][4:]} {b}" for i, b in enumerate(bases))
    text = f"one colour per aligner ({colours})"
    if len(variants) > 1:
        words = ", ".join(
            f"{SHAPES[MARKERS[i % len(MARKERS)]]} trained on {v}" for i, v in enumerate(variants)
        )
        text += f"; the marker tells the training languages: {words}"
    return text + "."
