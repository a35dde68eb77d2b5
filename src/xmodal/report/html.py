"""`xmodal report RUN_DIR`: one self-contained HTML page of a run folder.

Everything the page shows is inside the file: pictures are base64 PNG data URIs, the style is
one inline <style>, and a Content-Security-Policy forbids loading anything else, so the page
reads the same offline, mailed, or years later. PNG and SVG of each picture lie beside it in
plots/. Key numbers come first; the per-seed rows, skipped inputs, config and versions last.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from xmodal.experiments import run_folder as layout
from xmodal.experiments.cross_model import GAP, WASSERSTEIN, CrossModelStudy
from xmodal.experiments.cross_model import findings_lines as cross_model_findings
from xmodal.experiments.crossval import cv_column
from xmodal.experiments.run_folder import RunFolder
from xmodal.experiments.tables import headline_columns
from xmodal.files import atomic_write_text
from xmodal.geometry import skipped_measures
from xmodal.report import figures, worst
from xmodal.report.cross_model import load_studies
from xmodal.report.cross_model import pictures as cross_model_pictures
from xmodal.report.gap import GapStudy, conclusion, is_measure, load_study
from xmodal.report.languages import cell, language_tables, load_languages, plot_language_scores
from xmodal.retrieval.predictions import read_predictions

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: the geometry measures shown in tables (the gap study covers every measure)
MRR = ("t2i_MRR", "i2t_MRR")
KEY_MEASURES = (
    "gap",
    "cosine_auc",
    "wasserstein_exact",
    "wasserstein_gaussian",
    "separability",
    "gromov_wasserstein",
    "cka",
    "mutual_knn",
)
MAX_PROBLEMS = 200
DRAWN_DPI, SHOWN_DPI = 150, 96  # xmodal.geometry.plots saves PNGs at 150 dpi
EXAMPLES_ZOOM = 1.35  # thumbnails and captions read better a little larger
HALF_WIDTH = 720  # px: figures up to this wide share a row

STYLE = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#e4e7eb;--accent:#2f6fdf;--good:#1a7f37;--bg:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:0 0 12px}
h3{font-size:16px;margin:18px 0 8px}
.sub{color:var(--muted);margin:0 0 16px}
nav{margin:8px 0 20px;font-size:14px}
nav a{color:var(--accent);margin-right:14px;text-decoration:none}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.card .k{color:var(--muted);font-size:13px}.card .v{font-size:28px;font-weight:650}
.card .v small{font-size:15px;font-weight:400;color:var(--muted)}
.card .t{font-size:19px;font-weight:650;line-height:1.3;padding:5px 0;overflow-wrap:anywhere}
.card .d{color:var(--muted);font-size:12px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 22px;
 margin:18px 0}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:5px 6px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td:first-child{white-space:nowrap}
th{background:#f0f2f5;font-weight:600}td.n,th.n{text-align:right;white-space:nowrap}
tbody tr:hover td{background:#f7faff}td strong{color:var(--good)}
.scroll{overflow-x:auto}
.figs{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}
figure{margin:14px 0 18px;max-width:100%}figure.half{width:calc(50% - 12px)}
figure img{display:block;max-width:100%;height:auto;
 border:1px solid var(--line);border-radius:6px;background:#fff}
figcaption{color:var(--muted);font-size:13px;margin-top:4px}figcaption b{color:var(--fg)}
pre{background:#f3f4f6;border-radius:6px;padding:12px;overflow:auto;font-size:12px}
.note{color:var(--muted);font-size:13px}details summary{cursor:pointer;color:var(--accent)}
.warn{background:#fff8e1;border:1px solid #f0c36d;border-radius:8px;padding:8px 16px;margin:12px 0}
.warn ul{margin:4px 0;padding-left:20px}.chosen{color:var(--good);font-weight:600}
.failed{color:#b42318}
"""


@dataclass
class LoadedRun:
    """What a run folder holds, read once."""

    folder: Path
    config_text: str
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    study: GapStudy | None
    notes: list[str] = field(default_factory=list)  # what the report could not show, and why
    #: per test split shown (raw or aligned), the gap measures left out and why
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the score the run selects and sorts by (its config's `primary`)
    primary: str = "rsum"
    #: the run's studies across encoder pairs (runs over several pairs)
    cross_model: list[CrossModelStudy] = field(default_factory=list)
    #: languages.json: per-language scores, when the test captions come in several languages
    languages: dict[str, Any] | None = None

    @property
    def recall(self) -> list[str]:
        """The score columns the run has: R@K of both directions for its ks, then RSUM."""
        return headline_columns(self.summary)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read a run folder written by `xmodal run` (or `xmodal gap`), checksums verified."""
    run = RunFolder(run_dir)
    results = run.read_results()
    config_text = run.read_text(run.config) if run.config.exists() else ""
    config = yaml.safe_load(config_text) if config_text else None
    return LoadedRun(
        run.path,
        config_text,
        run.read_json(run.record) if run.record.exists() else {},
        results.get("runs", []),
        results["summary"],
        run.read_lines(run.problems),
        load_study(run.path),
        primary=(config or {}).get("primary", "rsum"),
        cross_model=load_studies(run.path),
        languages=load_languages(run.path),
    )


def write_report(
    run_dir: str | Path, out: str | Path | None = None, *, examples: int = 4, seed: int = 0
) -> Path:
    """Write the run's report (default: in the run folder; pictures in a plots folder beside
    it)."""
    run = load_run(run_dir)
    path = Path(out) if out else RunFolder(run.folder).report
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = make_pictures(run, path.parent / layout.PLOTS, examples, seed)
    atomic_write_text(path, render(run, pictures, _worst_queries(run)))
    return path


def chosen_row(
    summary: Sequence[Mapping[str, Any]], primary: str = "rsum"
) -> tuple[Mapping[str, Any], str] | None:
    """The configuration a user would pick without looking at test, and how it was picked, as
    the findings select (among the first dataset x encoder pair's rows): the best k-fold CV
    score on the training images (the run's primary, RSUM by default) when the run
    cross-validated, else the best validation score, or, without a validation split, the best
    test score. Configurations whose fits (or fold fits) failed are never chosen; None when
    every one failed."""
    first = (summary[0]["dataset"], summary[0]["encoder"])
    rows = [r for r in summary if (r["dataset"], r["encoder"]) == first and _scored(r, primary)]
    if not rows:
        return None
    name = _score_name(primary)
    cv = cv_column(primary)
    with_cv = [r for r in rows if _scored(r, cv)]
    if with_cv:
        best = max(with_cv, key=lambda r: r[cv])
        return best, f"chosen by {best['cv_folds']}-fold CV {name} on the training images"
    why = " (every configuration had a failed fold fit)" if any(cv in r for r in rows) else ""
    with_val = [r for r in rows if _scored(r, f"val_{primary}")]
    if with_val:
        best = max(with_val, key=lambda r: r[f"val_{primary}"])
        return best, f"chosen on validation {name}{why}"
    return max(rows, key=lambda r: r[primary]), f"best test {name} (no validation split){why}"


def _score_name(column: str) -> str:
    return "RSUM" if column == "rsum" else column


def _scored(row: Mapping[str, Any], column: str) -> bool:
    """Whether a row holds a number for `column` (a failed fit holds NaN, a mean over seeds
    with a failed one too)."""
    v = row.get(column)
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _failed(row: Mapping[str, Any]) -> bool:
    return str(row.get("status", "ok")).startswith("failed")


def chosen_fit(run: LoadedRun) -> Mapping[str, Any] | None:
    """The fit the report shows in pictures: the chosen configuration's first successful seed
    (None when every fit failed)."""
    chosen = chosen_row(run.summary, run.primary)
    return _seed_row(run, chosen[0]) if chosen else None


def _seed_row(run: LoadedRun, config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first successful seed's row of a summary configuration (its saved model draws the
    pictures)."""
    key = ("dataset", "encoder", "aligner", "metric")
    rows = (r for r in run.rows if all(r[k] == config[k] for k in key) and not _failed(r))
    return next(rows, None)


def make_pictures(run: LoadedRun, folder: Path, examples: int, seed: int) -> list[figures.Picture]:
    """Every picture the run allows; what cannot be drawn is noted in run.notes, and the gap
    measures each shown split leaves out in run.skipped."""
    pictures: list[figures.Picture] = []
    pairs = dict.fromkeys((r["dataset"], r["encoder"]) for r in run.rows)
    splits = {}
    for dataset, encoder in pairs:
        try:
            splits[dataset, encoder] = figures.load_split(run.folder, dataset, encoder)
        except ValueError as e:
            run.notes.append(str(e))
            continue
        label = f"{encoder} on {dataset}" if len(pairs) > 1 else encoder
        d = splits[dataset, encoder].data
        run.skipped[f"raw {encoder} on {dataset}"] = skipped_measures(
            d.images, d.texts, d.caption_image
        )
        pictures += figures.raw_pictures(splits[dataset, encoder], label, folder)
    best = chosen_fit(run)
    split = splits.get((best["dataset"], best["encoder"])) if best else None
    if best and split:
        try:
            aligner = figures.load_row_aligner(run.folder, best)
            d = aligner.transform(split.data)
            label = f"aligned by {best['aligner']} / {best['metric']} (chosen row)"
            run.skipped[label] = skipped_measures(d.images, d.texts, d.caption_image)
            pictures += figures.aligned_pictures(best, d, folder)
            pictures += figures.example_pictures(aligner.scorer(), d, split, folder, examples, seed)
        except (FileNotFoundError, ValueError) as e:
            run.notes.append(f"some pictures of the chosen row are missing: {e}")
    pictures += _gap_pictures(run)
    pictures += cross_model_pictures(run.cross_model, folder)
    if run.languages:
        score = _language_score(run)
        tables = language_tables(run.languages["lines"], score)
        pictures += [plot_language_scores(t, score, folder) for t in tables]
    return pictures


def _worst_queries(run: LoadedRun) -> str:
    """The chosen row's worst test queries, from its first seed's predictions."""
    best = chosen_fit(run)
    if best is None:
        return ""
    try:
        table = read_predictions(RunFolder(run.folder).predictions(str(best["model"])))
        split = figures.load_split(run.folder, best["dataset"], best["encoder"])
    except (OSError, ValueError) as e:
        run.notes.append(f"worst queries not shown: {e}")
        return ""
    label = f"{best['aligner']} / {best['metric']} (the chosen row, seed {best['seed']})"
    html, notes = worst.section(table, split, label)
    run.notes += notes
    return html


def _gap_pictures(run: LoadedRun) -> list[figures.Picture]:
    """The gap study's scatter plots, as `xmodal gap` left them in the run folder."""
    out = []
    for target, paths in (run.study.plots if run.study else {}).items():
        found = [run.folder / p for p in paths]
        if not all(p.is_file() for p in found):
            run.notes.append(f"gap plot missing: {', '.join(map(str, found))}")
            continue
        caption = (
            "One dot per unit of the study above, labelled aligner/metric; each panel's title "
            "gives Spearman ρ, its Benjamini-Hochberg adjusted q and n."
        )
        colours = "every dot is one colour (blue): colour carries no meaning here."
        out.append(figures.Picture("gap", f"Gap measures vs {target}", caption, found, colours))
    return out


# ---------------------------------------------------------------- rendering


def render(run: LoadedRun, pictures: Sequence[figures.Picture], worst_queries: str = "") -> str:
    """The whole page as one string (`worst_queries`: that section's HTML, if any)."""
    name = run.record.get("name") or run.folder.name
    sections = [
        ("results", "Results", _results_section(run)),
        ("languages", "Retrieval per language", _languages_section(run, pictures)),
        ("gap", "Does the gap predict retrieval?", _gap_section(run, pictures)),
        ("pairs", "Across encoder pairs", _cross_model_section(run, pictures)),
        ("geometry", _geometry_title(run), _geometry_section(run, pictures)),
        ("examples", "Retrieval examples", _pictures_html(pictures, "examples")),
        ("worst", "Worst queries", worst_queries),
        ("seeds", "Per-seed rows", _seeds_section(run)),
        ("inputs", "Skipped inputs", _problems_section(run)),
        ("setup", "Config and versions", _setup_section(run)),
    ]
    shown = [(a, t, body) for a, t, body in sections if body]
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in shown)
    body = "".join(f'<section id="{a}"><h2>{escape(t)}</h2>{b}</section>' for a, t, b in shown)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in run.notes)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>xmodal report: {escape(str(name))}</title>"
        f"<style>{STYLE}{worst.STYLE}</style></head>"
        "<body><main>"
        f"<h1>{escape(str(name))}</h1><p class=sub>{escape(_subtitle(run))}</p>"
        f"{_cards(run)}{_warnings(run)}<nav>{nav}</nav>{notes}{body}</main></body></html>\n"
    )


def _subtitle(run: LoadedRun) -> str:
    parts = [f"run folder {run.folder.name}"]
    if run.record.get("finished"):
        parts.append(f"finished {run.record['finished']}")
    parts.append(f"{len(run.summary)} configurations, {len(run.rows)} fitted aligners")
    return " · ".join(parts)


def _cards(run: LoadedRun) -> str:
    """The key numbers: the chosen configuration, the validation score that chose it, and its
    test recalls."""
    chosen = chosen_row(run.summary, run.primary)
    if chosen is None:
        return '<div class="warn failed">Every fit of this run failed: no scores to show.</div>'
    best, how = chosen
    where = f"{how}; {best['encoder']} on {best['dataset']}"
    recalls = run.recall[:-1]
    k, n = min(int(c.split("@")[1]) for c in recalls), len(recalls)
    cards = [  # (label, value, detail, value class: "t" for words, "v" for a number)
        ("configuration", f"{best['aligner']} · {best['metric']}", where, "t"),
    ]
    val, cv = f"val_{run.primary}", cv_column(run.primary)
    if _scored(best, cv):
        detail = "the score that chose this row: mean ± std over the held-out folds of the "
        detail += "training images (not the test split)"
        label = f"{best['cv_folds']}-fold CV {_score_name(run.primary)}"
        cards.append((label, _cv_cell(best, cv), detail, "v"))
    elif _scored(best, val):
        detail = "the score that chose this row, mean over seeds (not the test split)"
        cards.append((f"validation {_score_name(run.primary)}", f"{best[val]:.1f}", detail, "v"))
    cards += [
        (f"text → image R@{k}", _mean(best, f"t2i_R@{k}"), "% of captions, test split", "v"),
        (f"image → text R@{k}", _mean(best, f"i2t_R@{k}"), "% of images, test split", "v"),
        ("RSUM", _mean(best, "rsum"), f"sum of the {n} recalls, max {100 * n}", "v"),
    ]
    if run.primary not in ("rsum", f"t2i_R@{k}", f"i2t_R@{k}"):
        cards.append((run.primary, _mean(best, run.primary), "the run's primary score", "v"))
    n_images = best.get("test_images") or best.get("n_images")
    if n_images:
        cards.append(("test images", f"{n_images:.0f}", f"chance R@1 {100 / n_images:.1f}%", "v"))
    html = "".join(
        f'<div class="card"><div class="k">{escape(label)}</div><div class="{cls}">'
        f'{_spread_small(value)}</div><div class="d">{escape(detail)}</div></div>'
        for label, value, detail, cls in cards
    )
    return f'<div class="cards">{html}</div>'


def _cv_cell(row: Mapping[str, Any], cv: str) -> str:
    """ "mean ± std" over the held-out folds; "–" when a fold fit failed."""
    if not _scored(row, cv):
        return f"– ({row.get('cv_failed', '?')} fold(s) failed)" if cv in row else "–"
    return f"{row[cv]:.1f} ± {row[f'{cv}_std']:.1f}"


def _spread_small(value: str) -> str:
    """A card's "mean ± spread", the spread in smaller type."""
    mean, sep, spread = value.partition(" ± ")
    return escape(mean) + (f"<small> ± {escape(spread)}</small>" if sep else "")


def _warnings(run: LoadedRun) -> str:
    """What the run warned of (a K at or above a gallery, a small test split), up front."""
    said = run.record.get("warnings") or []
    if not said:
        return ""
    items = "".join(f"<li>{escape(str(w))}</li>" for w in said)
    return f'<div class="warn"><b>Read with care</b> (the run warned):<ul>{items}</ul></div>'


def _mean(row: Mapping[str, Any], col: str) -> str:
    """mean ± std over seeds of a summary column; "± n/a" with one seed (no spread measured),
    "–" when there is no number (a failed fit)."""
    if not _scored(row, col):
        return "–"
    std = row.get(f"{col}_std")
    spread = f"{std:.1f}" if row.get("seeds", 1) > 1 and _scored(row, f"{col}_std") else "n/a"
    return f"{row[col]:.1f} ± {spread}"


def _results_section(run: LoadedRun) -> str:
    primary = run.primary
    scored = sorted((r for r in run.summary if _scored(r, primary)), key=lambda r: -r[primary])
    rows = scored + [r for r in run.summary if not _scored(r, primary)]
    val, cv = f"val_{primary}", cv_column(primary)
    cols = [c for c in [*run.recall, *MRR, val, cv] if any(c in r for r in rows)]
    best = {c: max((r[c] for r in scored if _scored(r, c)), default=None) for c in cols}
    chosen = chosen_row(run.summary, primary)
    pairs = {(r["dataset"], r["encoder"]) for r in rows}
    head = ["aligner", "metric", "seeds"]
    if len(pairs) > 1:  # one pair is named in the key numbers above: keep the table narrow
        head = ["dataset", "encoder", *head]
    body = []
    for r in rows:
        cells = [escape(str(r.get(k, ""))) for k in head]
        if chosen and r is chosen[0]:
            cells[head.index("aligner")] += ' <span class="chosen">◀ chosen</span>'
        if not _scored(r, primary):
            failed = f"failed ({_failed_seeds(run, r)} of {r.get('seeds', '?')} seeds)"
            cells += [f'<span class="failed">{failed}</span>', *["–"] * len(cols)]
            body.append(cells)
            continue
        for c in cols:
            text = f"{r[c]:.1f}" if c == val else _cv_cell(r, c) if c == cv else _mean(r, c)
            cells.append(f"<strong>{text}</strong>" if r.get(c) == best[c] else text)
        cells.append(_num(r.get("fit_seconds")))
        body.append(cells)
    headers = [*head, *[_header(c) for c in cols], "fit s"]
    if cv in cols:
        chose = (
            f"{_header(cv)}: mean ± std over the held-out folds of the training images, the "
            "score the choice (◀ chosen) was made on. "
        )
    elif val in cols:
        chose = f"{_header(val)}: the validation score the choice (◀ chosen) was made on. "
    else:
        chose = ""
    note = (
        '<p class="note">Test split, mean ± std over seeds (± n/a: one seed, no spread '
        "measured); R@K and MRR (mean reciprocal rank) in percent of queries, RSUM their sum "
        f"over the K below each gallery's size. {chose}Bold green: the "
        f"best value of each column (colour marks nothing else). Sorted by "
        f"{_score_name(primary)}.</p>"
    )
    table = _table(headers, body, range(len(head), len(headers)))
    return table + note + _failed_fits(run)


def _header(column: str) -> str:
    """A result column's heading: MRR says its unit (percent, like R@K)."""
    if column.startswith("val_"):
        return f"val {_score_name(column[4:])}"
    if column.startswith("cv_"):
        return f"CV {_score_name(column[3:])}"
    return f"{column} %" if column.endswith("_MRR") else column


def _failed_seeds(run: LoadedRun, config: Mapping[str, Any]) -> int:
    key = ("dataset", "encoder", "aligner", "metric")
    return sum(_failed(r) for r in run.rows if all(r[k] == config[k] for k in key))


def _failed_fits(run: LoadedRun) -> str:
    """Every fit that failed, with the reason its row records (no numbers to mistake)."""
    failed = [r for r in run.rows if _failed(r)]
    if not failed:
        return ""
    cols = ("aligner", "metric", "seed", "status")
    body = [[escape(str(r.get(c, ""))) for c in cols] for r in failed]
    return (
        f'<h3 class="failed">{len(failed)} failed fit(s)</h3>'
        '<p class="note">Their configurations show no scores above: a mean over seeds with a '
        "failed one would flatter or mislead.</p>" + _table(list(cols), body)
    )


def _language_score(run: LoadedRun) -> str:
    """The per-language score shown: text -> image R@K at the smallest K."""
    return f"t2i_R@{min(int(c.split('@')[1]) for c in run.recall[:-1])}"


def _languages_section(run: LoadedRun, pictures: Sequence[figures.Picture]) -> str:
    """Per dataset x encoder pair: the score of each configuration per caption language."""
    if not run.languages:
        return ""
    score = _language_score(run)
    out = []
    for t in language_tables(run.languages["lines"], score):
        body = [
            [
                escape(g),
                f"{t.captions[g]:.0f}",
                *[cell(t.scores.get((s, g)), score) for s in t.series],
            ]
            for g in t.languages
        ]
        out.append(
            f"<h3>{escape(t.encoder)} on {escape(t.dataset)}</h3>"
            + _table(["language", "test captions", *t.series], body, range(1, 2 + len(t.series)))
        )
    left = run.languages.get("left_out") or []
    seen = dict.fromkeys((x["language"], x["n_captions"], x["min_captions"]) for x in left)
    left_out = ", ".join(f"{escape(g)} ({n} &lt; {m})" for g, n, m in seen)
    note = (
        f'<p class="note">Text → image {escape(score)} [95% bootstrap CI over the language\'s '
        f"captions], mean over seeds and splits. Each caption is queried against "
        f"{escape(run.languages.get('gallery', 'every test image'))}. Every score, R@K and "
        f"MRR, lies in {layout.LANGUAGES_CSV}."
        + (f" Left out, with fewer test captions than the minimum: {left_out}." if left else "")
        + "</p>"
    )
    return "".join(out) + note + _pictures_html(pictures, "languages")


def _gap_section(run: LoadedRun, pictures: Sequence[figures.Picture]) -> str:
    study = run.study
    if study is None:
        return ""
    targets = list(dict.fromkeys(c["target"] for c in study.correlations))
    by = {(c["measure"], c["target"]): c for c in study.correlations}
    measures = list(dict.fromkeys(c["measure"] for c in study.correlations))
    last = targets[-1]
    measures.sort(
        key=lambda m: -abs(by[m, last]["rho"]) if math.isfinite(by[m, last]["rho"]) else 0
    )
    body = []
    for m in measures:
        cells = [escape(m)]
        cells += [_rho_cell(by[m, t]) for t in targets]
        c = by[m, last]
        cells += [str(c["n"]), escape(c["reading"])]
        body.append(cells)
    headers = ["measure", *[f"ρ vs {t}" for t in targets], "n", f"reading ({last})"]
    intro = (
        f"<p>Spearman rank correlation of each gap measure with retrieval across "
        f"{study.units} aligners ({study.configurations} configurations; p in brackets; "
        "* = significant after Benjamini-Hochberg adjustment, q &lt; 0.05). The unit is one "
        "aligner, its measures and recall averaged over its metrics: the metrics of one "
        "aligner share vectors or training, and are not independent. n = aligners with the "
        f"measure. Sorted by |ρ| against {escape(last)}.</p>"
    )
    table = _table(headers, body, range(1, len(headers) - 1))
    shading = (
        '<p class="note">Cell colour: red behind a positive ρ, blue behind a negative one, '
        "the stronger the correlation the darker.</p>"
    )
    return (
        intro
        + table
        + shading
        + f"<p><b>{escape(conclusion(study))}</b></p>"
        + _pictures_html(pictures, "gap")
    )


def _cross_model_section(run: LoadedRun, pictures: Sequence[figures.Picture]) -> str:
    """Per dataset: what the study says, the pairs, and every correlation with its CI."""
    out = []
    for study in run.cross_model:
        said = "".join(f"<li>{escape(s)}</li>" for s in cross_model_findings(study))
        out.append(f"<h3>{escape(study.dataset)}</h3><ul>{said}</ul>")
        out.append(_pairs_table(study))
        out.append(_correlations_table(study))
    if not out:
        return ""
    intro = (
        "<p>One point per encoder pair (image model + text model): pairs differ in their "
        "models, so each is an independent observation. Raw measures describe the encoders' "
        "own outputs (only those that compare spaces of different dimensions exist there); "
        "the others are taken in each aligner's shared space.</p>"
    )
    return intro + "".join(out) + _pictures_html(pictures, "cross_model")


def _pairs_table(study: CrossModelStudy) -> str:
    raw = sorted({k for p in study.pairs for k in p if k.startswith("raw_") and is_measure(k)})
    per_system = [*study.targets, GAP, WASSERSTEIN[0]]
    headers = ["encoder pair", *raw]
    headers += [f"{s}: {c}" for s in study.systems for c in per_system]
    body = [
        [escape(str(p["encoder"])), *(_num(p.get(c)) for c in headers[1:])] for p in study.pairs
    ]
    return _table(headers, body, range(1, len(headers)))


def _correlations_table(study: CrossModelStudy) -> str:
    """Measures x (system, target): rho with its bootstrap CI; * = q < 0.05."""
    columns = [(s, t) for s in study.systems for t in study.targets]
    by = {(c["measure"], c["system"], c["target"]): c for c in study.correlations}
    measures = list(dict.fromkeys(c["measure"] for c in study.correlations))
    body = [[escape(m), *(_rho_ci_cell(by.get((m, s, t))) for s, t in columns)] for m in measures]
    headers = ["measure", *[f"{s}: ρ vs {t}" for s, t in columns]]
    note = (
        '<p class="note">Spearman ρ across encoder pairs with its bootstrap 95% CI over pairs; '
        "* = Benjamini-Hochberg q &lt; 0.05 over the study's tests. Cell colour: red behind a "
        "positive ρ, blue behind a negative one, the stronger the darker.</p>"
    )
    return _table(headers, body, range(1, len(headers))) + note


def _rho_ci_cell(c: Mapping[str, Any] | None) -> str:
    if c is None or not math.isfinite(c["rho"]):
        return "–"
    return f"{_rho_badge(c)} [{c['ci_lo']:+.2f}, {c['ci_hi']:+.2f}]"


def _rho_cell(c: Mapping[str, Any]) -> str:
    if not math.isfinite(c["rho"]):
        return "–"
    return f"{_rho_badge(c)} ({c['p_value']:.2g})"


def _rho_badge(c: Mapping[str, Any]) -> str:
    """rho on a shade of its sign and strength, starred when q < 0.05."""
    rho = c["rho"]
    hue = "47,111,223" if rho < 0 else "214,69,65"
    star = "*" if c["q_value"] < 0.05 else ""
    return (
        f'<span style="background:rgba({hue},{abs(rho) * 0.45:.2f});padding:1px 4px;'
        f'border-radius:3px">{rho:+.2f}{star}</span>'
    )


def _has_measures(run: LoadedRun) -> bool:
    return any(is_measure(k) for row in run.summary for k in row)


def _geometry_title(run: LoadedRun) -> str:
    return "Geometry of the modality gap" if _has_measures(run) else "Embedding views"


def _geometry_section(run: LoadedRun, pictures: Sequence[figures.Picture]) -> str:
    """The gap measures and views; a run without measures (geometry: false) gets its views
    folded away, and no empty tables."""
    views = _pictures_html(pictures, "geometry")
    if not _has_measures(run):
        if not views:
            return ""
        n = sum(p.section == "geometry" for p in pictures)
        return (
            f"<details><summary>{n} PCA view(s) and distance histogram(s) of the test split "
            "(the run measured no modality gap: <code>geometry: false</code>; "
            "<code>xmodal gap CONFIG</code> runs a config with it)</summary>"
            f"{views}</details>"
        )
    return _measures_tables(run) + views + _skipped_measures(run)


def _measures_tables(run: LoadedRun) -> str:
    out = []
    present = {k for row in run.summary for k in row}
    raw = [m for m in KEY_MEASURES if f"raw_{m}" in present]
    if raw:
        pairs = {(r["dataset"], r["encoder"]): r for r in run.summary}
        body = [
            [escape(f"{e} on {d}")] + [_num(r[f"raw_{m}"]) for m in raw]
            for (d, e), r in pairs.items()
        ]
        out.append(
            "<h3>Raw embeddings (test split)</h3>"
            + _table(["encoders", *raw], body, range(1, 1 + len(raw)))
        )
    aligned = [m for m in KEY_MEASURES if f"aligned_{m}" in present]
    if aligned:
        rows = sorted((r for r in run.summary if _scored(r, "rsum")), key=lambda r: -r["rsum"])
        body = [
            [escape(f"{r['aligner']} / {r['metric']}"), f"{r['rsum']:.1f}"]
            + [_num(r.get(f"aligned_{m}")) for m in aligned]
            for r in rows
        ]
        out.append(
            "<h3>After alignment (test split, mean over seeds)</h3>"
            + _table(["configuration", "rsum", *aligned], body, range(1, 2 + len(aligned)))
        )
    return "".join(out) + (
        '<p class="note">Measures on L2-normalised vectors: gap = distance between the '
        "modality centroids; cosine_auc = chance that a random pair is farther than a matched "
        "one; wasserstein_* = optimal-transport distance between the two clouds; separability = "
        "held-out accuracy of a classifier telling image from text vectors (0.5 = inseparable); "
        "cka / mutual_knn = how alike the two spaces' structures are.</p>"
    )


def _skipped_measures(run: LoadedRun) -> str:
    """Which gap measures each shown split leaves out, grouped by reason."""
    items = []
    for split, skipped in run.skipped.items():
        reasons: dict[str, list[str]] = {}
        for measure, why in skipped.items():
            reasons.setdefault(why, []).append(measure)
        items += [f"{split}: {', '.join(ms)} left out ({why})" for why, ms in reasons.items()]
    if not items:
        return ""
    lines = "".join(f"<li>{escape(i)}</li>" for i in items)
    return (
        f'<details class="note"><summary>Measures that do not apply ({len(items)})</summary>'
        f"<ul>{lines}</ul></details>"
    )


def _seeds_section(run: LoadedRun) -> str:
    """One row per fit; a failed fit shows its status, not numbers."""
    key = ["dataset", "encoder", "aligner", "metric", "seed"]
    scores = [c for c in [*run.recall, *MRR] if any(c in r for r in run.rows)]
    body = []
    for r in run.rows:
        cells = [escape(str(r.get(c, ""))) for c in key]
        if _failed(r):
            status = f'<span class="failed">{escape(str(r["status"]))}</span>'
            cells += [status, *["–"] * len(scores)]
        else:
            cells += ["ok", *[_num(r.get(c)) for c in scores]]
        body.append([*cells, _num(r.get("fit_seconds"))])
    headers = [*key, "status", *[_header(c) for c in scores], "fit_seconds"]
    table = _table(headers, body, range(len(key) + 1, len(headers)))
    return (
        f"<details><summary>{len(run.rows)} rows, one per fitted aligner</summary>{table}</details>"
    )


def _problems_section(run: LoadedRun) -> str:
    if not run.problems:
        return '<p class="note">None: every input was used.</p>'
    shown = run.problems[:MAX_PROBLEMS]
    body = [[escape(str(p.get(k, ""))) for k in ("where", "message", "action")] for p in shown]
    more = len(run.problems) - len(shown)
    tail = f'<p class="note">… and {more} more in {layout.PROBLEMS}.</p>' if more > 0 else ""
    return (
        f"<p>{len(run.problems)} input(s) skipped.</p>"
        + _table(["where", "problem", "action"], body)
        + tail
    )


def _setup_section(run: LoadedRun) -> str:
    rec = run.record
    facts = [
        ("python", rec.get("python")),
        ("platform", rec.get("platform")),
        *sorted((rec.get("versions") or {}).items()),
        ("seeds", json.dumps(rec.get("seeds")) if rec.get("seeds") else None),
    ]
    timings = rec.get("timings_seconds") or {}
    facts += [(f"time: {k}", f"{v:.1f} s") for k, v in timings.items()]
    body = [[escape(str(k)), escape(str(v))] for k, v in facts if v is not None]
    return (
        "<h3>Versions and timings</h3>"
        + _table(["what", "value"], body)
        + f"<h3>{layout.CONFIG}</h3><pre>{escape(run.config_text or '(missing)')}</pre>"
    )


def _pictures_html(pictures: Iterable[figures.Picture], section: str) -> str:
    """The section's pictures as embedded PNGs at about their printed size (drawn at 150 dpi,
    shown at 96; retrieval examples a little larger), so figure text has one size throughout;
    small figures go two abreast."""
    out = []
    for p in pictures:
        if p.section != section:
            continue
        png = Path(next(x for x in p.paths if Path(x).suffix == ".png"))
        data = png.read_bytes()
        scale = SHOWN_DPI / DRAWN_DPI * (EXAMPLES_ZOOM if section == "examples" else 1.0)
        with Image.open(io.BytesIO(data)) as im:
            width, height = (round(v * scale) for v in im.size)
        size = ' class="half"' if width <= HALF_WIDTH else f' style="width:{width}px"'
        out.append(
            f'<figure{size}><img src="data:image/png;base64,'
            f'{base64.b64encode(data).decode("ascii")}" width="{width}" height="{height}" '
            f'alt="{escape(p.title)}"><figcaption><b>{escape(p.title)}.</b> '
            f"{escape(p.caption)} <i>Colours:</i> {escape(p.colours)} "
            f"({_copies(p.paths)})</figcaption></figure>"
        )
    return f'<div class="figs">{"".join(out)}</div>' if out else ""


def _copies(paths: Sequence[Path]) -> str:
    """Where the picture's files lie, e.g. "PNG and SVG: plots/pca_raw.*"."""
    kinds = " and ".join(Path(x).suffix[1:].upper() for x in paths)
    name = Path(paths[0]).stem + (".*" if len(paths) > 1 else Path(paths[0]).suffix)
    return f"{kinds}: {layout.PLOTS}/{escape(name)}"


def _table(
    headers: Sequence[str],
    body: Sequence[Sequence[str]],
    numeric: Container[int] = (),
) -> str:
    """An HTML table of already escaped cells; the `numeric` columns right-aligned."""
    cls = [' class="n"' if i in numeric else "" for i in range(len(headers))]
    # a long snake_case name may wrap after an underscore
    names = [escape(h).replace("_", "_<wbr>") for h in headers]
    head = "".join(f"<th{c}>{h}</th>" for c, h in zip(cls, names, strict=True))
    rows = "".join(
        "<tr>" + "".join(f"<td{c}>{x}</td>" for c, x in zip(cls, r, strict=True)) + "</tr>"
        for r in body
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _num(v: object) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "–"
    if not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
