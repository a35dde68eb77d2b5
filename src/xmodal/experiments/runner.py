"""`xmodal run CONFIG`: datasets x encoder pairs x aligners x metrics x seeds -> a run folder.

The run folder holds results.csv / results.json / results.md (one row per fitted aligner, and a
mean +- std summary over seeds), the resolved config, versions, seeds, timings and every
skipped input (problems.jsonl). Only the test split is evaluated for the results; the
validation split serves model selection inside the aligners. A dataset with captions in several
languages also gets per-language scores and training-language variants
(`xmodal.experiments.languages`: languages.csv / languages.json).

Each fit appends its row to rows.jsonl as soon as its model is saved, so an interrupted run
resumes (`run_experiment(..., resume=RUN_DIR)`, `xmodal run --resume RUN_DIR`): finished fits
are reused, the others run, and no row is lost or counted twice.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from xmodal.align.base import (
    Aligner,
    FitContext,
    FitDiverged,
    IncompatibleParams,
    primary_columns,
)
from xmodal.align.registry import build_aligner
from xmodal.data.dataset import Problem, write_problems
from xmodal.data.loaders import load_dataset
from xmodal.embeddings import Embedded
from xmodal.encoders.registry import build_pair
from xmodal.experiments.config import (
    AlignerConfig,
    ConfigError,
    DatasetConfig,
    EncoderConfig,
    ExperimentConfig,
    check_inputs,
    resolved,
)
from xmodal.experiments.cross_model import cross_model_studies
from xmodal.experiments.crossval import (
    check_folds,
    fold_assignment,
    fold_split,
    fold_warnings,
    with_cv,
)
from xmodal.experiments.findings import findings_markdown
from xmodal.experiments.languages import (
    COLUMN,
    LanguageStudy,
    TrainVariant,
    caption_languages,
    variant_aligners,
)
from xmodal.experiments.pipeline import EMBEDDINGS, EmbeddedDataset, embed_dataset, load_embedded
from xmodal.experiments.run_folder import RunFolder
from xmodal.experiments.tables import markdown_table, summarize
from xmodal.files import atomic_path, write_checksum
from xmodal.progress import bars, note, silence_libraries
from xmodal.retrieval.evaluate import MIN_QUERIES, NonFiniteScores, evaluate
from xmodal.retrieval.predictions import SplitIds, predictions_table, top_k, write_predictions
from xmodal.similarity.metrics import Metric
from xmodal.store import EmbeddingStore


@dataclass
class RunResult:
    folder: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Prepared:
    """One dataset x encoder pair, embedded and split, plus the problems met on the way."""

    dataset: str
    encoder: EncoderConfig
    whole: EmbeddedDataset
    parts: dict[str, EmbeddedDataset]
    problems: list[Problem]
    timings: dict[str, float]
    #: the split seed, when the config repeats the study over several splits (else None)
    split_seed: int | None = None
    #: the seed the split was cut with (the cross-validation folds are cut with it too)
    seed: int = 0

    @property
    def splits(self) -> dict[str, Embedded]:
        return {name: part.all for name, part in self.parts.items()}


def prepare(
    config: ExperimentConfig,
    store: EmbeddingStore,
    progress: bool = True,
    datasets: list[DatasetConfig] | None = None,
    encoders: list[EncoderConfig] | None = None,
) -> Iterator[Prepared]:
    """Load, embed (cached) and split every dataset x encoder pair of a config, lazily.
    Without bars (`progress` off, or not on a terminal) the model libraries stay quiet too."""
    if not bars(progress):
        silence_libraries()
    for dcfg in datasets or config.datasets:
        if dcfg.source.startswith(EMBEDDINGS):
            yield from _prepared_embeddings(dcfg, encoders or config.encoders)
            continue
        t = time.perf_counter()
        dataset = load_dataset(dcfg.source, images=dcfg.images, **dcfg.options)
        load_s = time.perf_counter() - t
        for ecfg in encoders or config.encoders:
            t = time.perf_counter()
            image_enc, text_enc = build_pair(ecfg.image, ecfg.text, ecfg.model, config.device)
            embedded = embed_dataset(dataset, image_enc, text_enc, store, progress=bars(progress))
            pair, embed_s = f"{dcfg.label} / {ecfg.label}", time.perf_counter() - t
            timings = {f"load {dcfg.label}": load_s, f"embed {pair}": embed_s}
            ds = embedded.dataset
            note(
                f"embedded {pair}: {len(ds.images)} images, {len(ds.captions)} captions "
                f"in {embed_s:.1f} s",
                progress,
            )
            yield from _splits(dcfg, ecfg, embedded, timings)


def _splits(
    dcfg: DatasetConfig, ecfg: EncoderConfig, whole: EmbeddedDataset, timings: dict[str, float]
) -> Iterator[Prepared]:
    """One Prepared per split seed of the dataset (split_seed set only when there are several)."""
    seeds = dcfg.split.split_seeds()
    for seed in seeds:
        parts = whole.split(dcfg.split.fractions(), seed)
        repeat = seed if len(seeds) > 1 else None
        problems = whole.dataset.problems
        yield Prepared(dcfg.label, ecfg, whole, parts, problems, timings, repeat, seed)


def _prepared_embeddings(dcfg: DatasetConfig, encoders: list[EncoderConfig]) -> list[Prepared]:
    """A dataset embedded beforehand (`xmodal embed`): no encoding; the config must name the
    encoder pair that made it, which aligners that use the models are given."""
    t = time.perf_counter()
    whole, shards = load_embedded(dcfg.source.removeprefix(EMBEDDINGS))
    made_by = (shards.image_encoder, shards.text_encoder)
    match = [e for e in encoders if (e.model or e.image, e.model or e.text) == made_by]
    if not match:
        raise ConfigError(
            f"datasets: {dcfg.source} was embedded with image {made_by[0]!r} and text "
            f"{made_by[1]!r}; add that pair to encoders"
        )
    return list(_splits(dcfg, match[0], whole, {f"load {dcfg.label}": time.perf_counter() - t}))


def fit_aligner(
    acfg: AlignerConfig,
    metric: Metric | str,
    seed: int,
    splits: dict[str, Embedded],
    progress: bool = False,
    encoders: EncoderConfig | None = None,
    ks: list[int] | tuple[int, ...] = (1, 5, 10),
    primary: str = "rsum",
    label: str = "",
) -> Aligner:
    """Build one aligner of a config entry and fit it on train (val for model selection, on
    the `primary` score over `ks`). `encoders` names the pair that made the vectors, for
    aligners that use the models. Raises FitDiverged when the fit ends with NaN or inf in its
    state."""
    val = splits.get("val")
    context = FitContext(
        seed=seed,
        progress=progress,
        val=val if val is not None and len(val.texts) else None,
        ks=tuple(ks),
        primary=primary,
        label=label,
        image_encoder=encoders.image if encoders is not None else None,
        text_encoder=encoders.text if encoders is not None else None,
    )
    aligner = build_aligner(acfg.kind, metric=metric, **acfg.params)
    return aligner.fit(splits["train"], context).require_finite_state()


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
    jobs: int | None = None,
) -> RunResult:
    """Fit and evaluate every aligner of the config into a new run folder, or, with `resume`,
    finish an interrupted run in its folder (the config must be the one it ran). `jobs`
    (default: the config's) > 1 fits that many aligners at once, each in its own process with
    its share of the cores: the same rows as one job, up to float rounding (fewer BLAS threads
    sum in another order, which can flip a near-tie).

    The inputs are checked before the folder is made: a bad data path or encoder leaves none.
    `progress` draws bars on a terminal and writes one line per finished step to stderr."""
    jobs = config.jobs if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    check_inputs(config)
    started = time.perf_counter()
    if resume is None:
        run = RunFolder.create(out_dir or config.runs_dir, config.name)
        run.write_text(run.config, yaml.safe_dump(resolved(config), sort_keys=False))
    else:
        run = RunFolder(resume)
        _check_same_config(run, config)
    finished = _finished_rows(run)
    if finished:
        note(f"resume: reusing {len(finished)} finished fit(s) logged in {run.rows}", progress)
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    timings: dict[str, float] = {}
    warned: list[str] = []
    by_language = LanguageStudy(run, config.ks)
    fold_rows: list[dict[str, Any]] = []
    for prep in prepare(config, EmbeddingStore(config.cache_dir), progress):
        problems = list(dict.fromkeys([*problems, *prep.problems]))
        timings |= prep.timings
        encoder = prep.encoder.label
        tag = "" if prep.split_seed is None else f"-split{prep.split_seed}"
        test_file = run.split(prep.dataset + tag, encoder)
        _save_test_split(test_file, prep.parts["test"])
        splits = prep.splits
        context: dict[str, Any] = {"dataset": prep.dataset, "encoder": encoder}
        if prep.split_seed is not None:
            context["split_seed"] = prep.split_seed
        context |= _sizes(splits)
        warned += _trivial_ks(context, splits["test"], config.ks, progress)
        warned += _small_test(context, splits["test"], progress)
        if config.geometry:
            context |= _geometry(splits["test"], "raw")
        langs = caption_languages(_dataset_config(config, prep.dataset), prep.parts)
        folds = _folds(config, prep)
        if folds is not None:
            where = f"{prep.dataset} / {encoder} (held-out folds)"
            warned += _warn(fold_warnings(folds, config.ks, where), progress)
        shared = FitInputs(
            splits,
            prep.encoder,
            context,
            config.ks,
            config.geometry,
            run.path,
            config.primary,
            test_ids=_split_ids(prep.parts["test"]),
            test_file=run.relative(test_file),
            train_sets=langs.train if langs else {},
            folds=folds,
        )
        fits = _grid(config, context, run, langs.variants if langs else None)
        done = _run_fits(fits + _fold_fits(fits, folds), shared, finished, jobs, progress)
        fitted, fold_rows = done[: len(fits)], fold_rows + done[len(fits) :]
        if langs is not None:
            by_language.add(fitted, context, langs)
        rows += fitted
    summary = with_cv(summarize(rows), fold_rows, config.primary)
    run.write_results(rows, summary, markdown_table(summary))
    by_language.write()
    studies = cross_model_studies(summary)
    if studies:
        run.write_json(run.cross_model, [s.to_json() for s in studies])
    findings = findings_markdown(summary, rows, run.path, config.primary, studies)
    run.write_text(run.findings, findings + by_language.findings())
    write_problems(problems, run.problems)
    write_checksum(run.problems)
    if fold_rows:
        timings["cross-validation fold fits"] = sum(r["fit_seconds"] for r in fold_rows)
    timings["total"] = time.perf_counter() - started
    reused = sum(row["model"] in finished for row in rows)
    _write_run_record(run, config, timings, len(problems), reused, warned)
    also = f" and {len(fold_rows)} fold fit(s)" if fold_rows else ""
    reused_all = reused + sum(_fold_key(r["model"], r["fold"]) in finished for r in fold_rows)
    note(
        f"done: {len(rows)} fit(s){also}, {reused_all} reused, in {timings['total']:.1f} s",
        progress,
    )
    return RunResult(run.path, rows, summary, problems)


def _folds(config: ExperimentConfig, prep: Prepared) -> np.ndarray | None:
    """The cross-validation fold of each training image (None without `selection.folds`)."""
    k = config.selection.folds if config.selection else None
    if k is None:
        return None
    images = prep.parts["train"].dataset.images
    check_folds(k, len(images), f"{prep.dataset} / {prep.encoder.label}")
    return fold_assignment([im.id for im in images], k, prep.seed)


def _warn(messages: list[str], progress: bool) -> list[str]:
    for message in messages:
        note(f"warning: {message}", progress)
    return messages


def _trivial_ks(
    context: dict[str, Any], test: Embedded, ks: list[int], progress: bool
) -> list[str]:
    """Warn of each K at or above a test gallery: its recall is 100 by construction."""
    out = []
    for direction, gallery in (("t2i", len(test.images)), ("i2t", len(test.texts))):
        big = [k for k in ks if k >= gallery]
        if big:
            out.append(
                f"{context['dataset']} / {context['encoder']}: {direction} R@{big} is 100 by "
                f"construction (the test gallery holds {gallery} items): left out of RSUM"
            )
            note(f"warning: {out[-1]}", progress)
    return out


def _small_test(context: dict[str, Any], test: Embedded, progress: bool) -> list[str]:
    """Warn of a test split too small for its recalls to separate configurations (below
    MIN_QUERIES images, as evaluate warns per fit)."""
    n = len(test.images)
    if n >= MIN_QUERIES:
        return []
    message = (
        f"{context['dataset']} / {context['encoder']}: the test split holds {n} images "
        f"(< {MIN_QUERIES}): one image query moves i2t R@K by {100 / n:.1f} points"
    )
    note(f"warning: {message}", progress)
    return [message]


@dataclass(frozen=True)
class PredictionsTarget:
    """Where a fit's test predictions go, the split's ids, and what their metadata records."""

    path: Path
    ids: SplitIds
    about: dict[str, Any]


def scores(
    data: Embedded,
    aligner: Aligner,
    ks: list[int],
    ranks_to: Path | None = None,
    predictions_to: PredictionsTarget | None = None,
) -> dict[str, Any]:
    """Recall@K both ways, MRR, ranks and RSUM of an aligner on a split (with their bootstrap
    CIs; the per-query ranks saved to `ranks_to` when given, and the top-k predictions, from
    the same scores, to `predictions_to`). A K at or above a gallery's size is 100 whatever
    the model: it is left out of RSUM."""
    if ranks_to is None:
        out = evaluate(aligner.transform(data), aligner.scorer(), ks, bootstrap=0)
    else:
        k = top_k(ks) if predictions_to is not None else 0
        out, per_query = evaluate(
            aligner.transform(data), aligner.scorer(), ks, return_ranks=True, top_k=k
        )
        ranks_to.parent.mkdir(exist_ok=True)
        per_query.save(ranks_to)
        write_checksum(ranks_to)
        if predictions_to is not None:
            table = predictions_table(per_query, predictions_to.ids, predictions_to.about)
            write_predictions(predictions_to.path, table)
    out.pop("warnings", None)  # said once per split by the run, not once per fit
    galleries = {"t2i": len(data.images), "i2t": len(data.texts)}
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d, n in galleries.items() for k in ks if k < n)
    return out


@dataclass(frozen=True)
class Fit:
    """One cell of the grid: an aligner entry under one metric and seed, and its model file
    (relative to the run folder, which also names the row)."""

    aligner: AlignerConfig
    metric: Metric
    seed: int
    model: str
    #: the training-language variant (datasets loaded with `languages`; else None)
    train_languages: str | None = None
    #: a cross-validation fit: fitted without this fold of the training images, scored on it;
    #: it saves no model (`model` names the fit on the whole train split it repeats)
    fold: int | None = None

    @property
    def key(self) -> str:
        """What its logged row is found by on resume."""
        return self.model if self.fold is None else _fold_key(self.model, self.fold)


def _fold_key(model: str, fold: int) -> str:
    return f"{model}#fold{fold}"


@dataclass(frozen=True)
class FitInputs:
    """What every fit of one dataset x encoder pair shares (sent once to each worker)."""

    splits: dict[str, Embedded]
    encoder: EncoderConfig
    context: dict[str, Any]
    ks: list[int]
    geometry: bool
    folder: Path
    primary: str = "rsum"
    #: the test split's ids and file (relative to the run folder): predictions are saved with them
    test_ids: SplitIds | None = None
    test_file: str = ""
    #: the train split of each training-language variant, by name (when the dataset has them)
    train_sets: dict[str, Embedded] = field(default_factory=dict)
    #: the cross-validation fold of each training image (None: no cross-validation)
    folds: np.ndarray | None = None


def _grid(
    config: ExperimentConfig,
    context: dict[str, Any],
    run: RunFolder,
    variants: list[TrainVariant] | None = None,
) -> list[Fit]:
    fits = []
    for acfg, train_languages in variant_aligners(config.aligners, variants):
        for metric in acfg.metrics or config.metrics:
            for seed in acfg.seeds or config.seeds:
                split = f"__split{context['split_seed']}" if "split_seed" in context else ""
                label = f"{context['dataset']}__{context['encoder']}__{acfg.label}"
                row_id = f"{label}__{metric}__s{seed}{split}"
                model = run.model(row_id)
                fits.append(Fit(acfg, Metric(metric), seed, model, train_languages))
    return fits


def _dataset_config(config: ExperimentConfig, label: str) -> DatasetConfig:
    return next(d for d in config.datasets if d.label == label)


def _fold_fits(fits: list[Fit], folds: np.ndarray | None) -> list[Fit]:
    """The cross-validation fits: k per configuration (aligner entry x metric x training
    languages), each with the seed of its first fit (see xmodal.experiments.crossval)."""
    if folds is None:
        return []
    first: dict[tuple[str, Metric, str | None], Fit] = {}
    for fit in fits:
        first.setdefault((fit.aligner.label, fit.metric, fit.train_languages), fit)
    k = int(folds.max()) + 1
    return [replace(fit, fold=i) for fit in first.values() for i in range(k)]


def _run_fits(
    fits: list[Fit],
    shared: FitInputs,
    finished: dict[str, dict[str, Any]],
    jobs: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """The rows of `fits` in grid order: logged ones reused, the others fitted (in `jobs`
    processes when > 1), each logged as it finishes (fold fits in their own log)."""
    done = {f.key: finished[f.key] for f in fits if f.key in finished}
    todo = [f for f in fits if f.key not in done]

    run = RunFolder(shared.folder)

    def record(fit: Fit, row: dict[str, Any]) -> None:
        run.log_row(row, run.rows if fit.fold is None else run.folds)
        done[fit.key] = row
        note(f"fit {len(done)}/{len(fits)}: {_describe(row, shared.primary)}", progress)

    if jobs == 1 or len(todo) < 2:
        for fit in todo:
            record(fit, _row(fit, shared, bars(progress), f"{len(done) + 1}/{len(fits)}"))
    else:
        _fit_in_processes(todo, shared, jobs, progress, record)
    return [done[f.key] for f in fits]


def _fit_in_processes(
    todo: list[Fit],
    shared: FitInputs,
    jobs: int,
    progress: bool,
    record: Callable[[Fit, dict[str, Any]], None],
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(jobs, len(todo))
    pool = ProcessPoolExecutor(
        workers,
        multiprocessing.get_context("spawn"),  # fork would copy torch's and BLAS's thread state
        initializer=_start_worker,
        initargs=(shared, max(1, (os.cpu_count() or 1) // workers)),
    )
    try:
        futures = {pool.submit(_fit_in_worker, fit): fit for fit in todo}
        for future in as_completed(futures):
            record(futures[future], future.result())
    finally:
        pool.shutdown(cancel_futures=True)


_WORKER_INPUTS: FitInputs | None = None


def _start_worker(shared: FitInputs, threads: int) -> None:
    """Keep the shared inputs; torch, BLAS and numba get this process's share of the cores
    (threads left waiting on busy cores spin, and cost more than they add)."""
    global _WORKER_INPUTS
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    threadpool_limits(threads)
    _WORKER_INPUTS = shared


def _fit_in_worker(fit: Fit) -> dict[str, Any]:
    assert _WORKER_INPUTS is not None, "worker not started by _start_worker"
    return _row(fit, _WORKER_INPUTS, progress=False)


def _row(fit: Fit, shared: FitInputs, progress: bool, position: str = "") -> dict[str, Any]:
    if fit.fold is None:
        return _fit_row(fit, shared, progress, position)
    return _fold_row(fit, shared, progress, position)


def _fit_row(fit: Fit, shared: FitInputs, progress: bool, position: str = "") -> dict[str, Any]:
    """Fit one aligner, evaluate it on test (and val), save its model; its results row.
    `position` ("i/n") goes into the fit's progress bar."""
    splits, acfg = shared.splits, fit.aligner
    label = f"fit {position}{': ' if position else ''}{acfg.label} / {fit.metric} / seed {fit.seed}"
    row = {
        **shared.context,
        "aligner": acfg.label,
        "kind": acfg.kind,
        "loss": acfg.params.get("loss", ""),
        "metric": str(fit.metric),
        "seed": fit.seed,
    }
    if fit.train_languages is not None:
        splits = {**splits, "train": shared.train_sets[fit.train_languages]}
        row |= {COLUMN: fit.train_languages, "train_captions": len(splits["train"].texts)}
    t = time.perf_counter()
    try:
        aligner = fit_aligner(
            acfg,
            fit.metric,
            fit.seed,
            splits,
            progress,
            shared.encoder,
            shared.ks,
            shared.primary,
            label,
        )
    except (FitDiverged, IncompatibleParams) as e:  # a row that says so, and no numbers
        return _failed(row, e, fit, shared.ks, t)
    fit_s = time.perf_counter() - t
    try:
        ranks = RunFolder(shared.folder).ranks(fit.model)
        test_scores = scores(splits["test"], aligner, shared.ks, ranks, _predictions(fit, shared))
        test_scores |= _validation(aligner, splits.get("val"), shared.ks, shared.primary)
    except NonFiniteScores as e:  # NaN would rank as a hit: no numbers, a failed row
        return _failed(row, e, fit, shared.ks, t)
    model_path = shared.folder / fit.model
    model_path.parent.mkdir(exist_ok=True)
    aligner.save(model_path)
    report = getattr(aligner, "fit_report_", {})
    row |= {"status": "ok", **test_scores, **report, "fit_seconds": round(fit_s, 3)}
    row["model"] = fit.model
    if shared.geometry:
        test = aligner.transform(splits["test"])
        row |= _geometry(test, "aligned", str(fit.metric), aligner.learned_scorer)
    return row


def _predictions(fit: Fit, shared: FitInputs) -> PredictionsTarget | None:
    if shared.test_ids is None:
        return None
    about = {"model": fit.model, "split": shared.test_file}
    return PredictionsTarget(
        RunFolder(shared.folder).predictions(fit.model), shared.test_ids, about
    )


def _fold_row(fit: Fit, shared: FitInputs, progress: bool, position: str = "") -> dict[str, Any]:
    """Fit one aligner without one fold of the training images and score it on that fold: a
    row of the fold's `primary` score. The validation split still serves early stopping; the
    test split is not read."""
    assert shared.folds is not None and fit.fold is not None
    k = int(shared.folds.max()) + 1
    train = shared.splits["train"]
    if fit.train_languages is not None:  # the variant's captions of the same training images
        train = shared.train_sets[fit.train_languages]
    fit_on, held_out = fold_split(train, shared.folds, fit.fold)
    splits = {"train": fit_on} | ({"val": shared.splits["val"]} if "val" in shared.splits else {})
    acfg, where = fit.aligner, f"fold {fit.fold + 1}/{k}"
    label = f"fit {position}{': ' if position else ''}{acfg.label} / {fit.metric} / {where}"
    names = ("dataset", "encoder", "split_seed")
    row = {name: v for name, v in shared.context.items() if name in names} | {
        "aligner": acfg.label,
        "kind": acfg.kind,
        "metric": str(fit.metric),
        "seed": fit.seed,
        "fold": fit.fold,
        "folds": k,
        "held_out_images": len(held_out.images),
    }
    t = time.perf_counter()
    try:
        aligner = fit_aligner(
            acfg, fit.metric, fit.seed, splits, progress, shared.encoder, shared.ks,
            shared.primary, label,
        )  # fmt: skip
        score = scores(held_out, aligner, shared.ks)[shared.primary]
    except (FitDiverged, IncompatibleParams, NonFiniteScores) as e:  # a failed fold: no number
        return _failed(row, e, fit, shared.ks, t)
    seconds = round(time.perf_counter() - t, 3)
    return row | {"status": "ok", shared.primary: score, "fit_seconds": seconds, "model": fit.model}


def _failed(
    row: dict[str, Any], error: Exception, fit: Fit, ks: list[int], started: float
) -> dict[str, Any]:
    nan = dict.fromkeys(primary_columns(ks), float("nan"))
    seconds = round(time.perf_counter() - started, 3)
    return row | {"status": f"failed: {error}", **nan, "fit_seconds": seconds, "model": fit.model}


def _describe(row: dict[str, Any], primary: str) -> str:
    """One log line of a finished fit."""
    repeat = f"fold {row['fold'] + 1}/{row['folds']}" if "fold" in row else f"seed {row['seed']}"
    where = f"{row['aligner']} / {row['metric']} / {repeat} on {row['dataset']} / {row['encoder']}"
    if row.get("status", "ok") != "ok":
        return f"{where}: {row['status']}"
    if "fold" in row:
        return f"{where}: held-out {primary} {row[primary]:.1f}, {row['fit_seconds']:.1f} s"
    stop = ""
    if "stopped_epoch" in row:
        stop = f", stopped at epoch {row['stopped_epoch']}"
        stop += f", kept {row['best_epoch']}" if row.get("best_epoch") else ""
    return f"{where}: test {primary} {row[primary]:.1f}, {row['fit_seconds']:.1f} s{stop}"


def _check_same_config(run: RunFolder, config: ExperimentConfig) -> None:
    folder = run.path
    try:
        ran = yaml.safe_load(run.read_text(run.config))
    except OSError as e:
        raise ConfigError(f"{folder}: not a run folder to resume ({e.strerror or e})") from None
    now = resolved(config)
    changed = sorted(k for k in {*ran, *now} if ran.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"{folder} ran another config (differs in: {', '.join(changed)}); "
            f"resume it with its own {run.config.name}, or start a new run"
        )


def _finished_rows(run: RunFolder) -> dict[str, dict[str, Any]]:
    """Logged rows whose model file exists, by model path; and logged fold rows (a fold fit
    saves no model), by fold key."""
    fits = {row["model"]: row for row in run.logged_rows() if (run.path / row["model"]).exists()}
    folds = {_fold_key(row["model"], row["fold"]): row for row in run.logged_rows(run.folds)}
    return fits | folds


def _validation(
    aligner: Aligner, val: Embedded | None, ks: list[int], primary: str
) -> dict[str, float]:
    """Validation scores, kept beside the test scores so choices can be made without test: the
    primary score, RSUM, and R@K of both directions at the smallest K."""
    if val is None or not len(val.texts):
        return {}
    got = scores(val, aligner, ks)
    k = min(ks)
    columns = dict.fromkeys([f"t2i_R@{k}", f"i2t_R@{k}", "rsum", primary])
    return {f"val_{c}": got[c] for c in columns}


def _geometry(
    data: Embedded, prefix: str, metric: str | None = None, learned_scorer: bool = False
) -> dict[str, Any]:
    """Every applicable modality-gap measure of a split, as `<prefix>_<measure>` columns, taken
    in the space `metric` ranks (encoder outputs: L2-normalised); `<prefix>_space` says which."""
    from xmodal.geometry import gap_measures, measured_space

    normalize, space = measured_space(metric, learned_scorer) if metric else (True, "")
    out: dict[str, Any] = {f"{prefix}_space": space or "L2-normalised encoder outputs"}
    if normalize is None:
        return out
    measures = gap_measures(data.images, data.texts, data.caption_image, normalize=normalize)
    return out | {f"{prefix}_{k}": v for k, v in measures.items()}


def _sizes(splits: dict[str, Embedded]) -> dict[str, int]:
    return {f"{name}_images": len(e.images) for name, e in splits.items()}


def _save_test_split(path: Path, test: EmbeddedDataset) -> None:
    """The test split's raw vectors, image paths and captions (and their ids, which the
    predictions name), for geometry and the report; written whole or not at all, with its
    checksum beside it."""
    path.parent.mkdir(exist_ok=True)
    ids = _split_ids(test)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            images=test.images,
            texts=test.texts,
            caption_image=test.dataset.caption_image,
            image_paths=np.array([str(Path(im.path).resolve()) for im in test.dataset.images]),
            captions=np.array([c.text for c in test.dataset.captions]),
            image_ids=np.array(ids.images),
            caption_ids=np.array(ids.captions),
        )
    write_checksum(path)


def _split_ids(split: EmbeddedDataset) -> SplitIds:
    return SplitIds([im.id for im in split.dataset.images], [c.id for c in split.dataset.captions])


def _write_run_record(
    run: RunFolder,
    config: ExperimentConfig,
    timings: dict[str, float],
    n_problems: int,
    reused: int,
    warnings: list[str],
) -> None:
    versions = {}
    for pkg in (
        "xmodal",
        "numpy",
        "torch",
        "scipy",
        "scikit-learn",
        "sentence-transformers",
        "transformers",
        "faiss-cpu",
        "numba",
        "pot",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    record = {
        "name": config.name,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "seeds": {
            "aligners": config.seeds,
            "splits": {d.label: d.split.seed for d in config.datasets},
        },
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "skipped_inputs": n_problems,
        "fits_reused_from_an_interrupted_run": reused,
        "warnings": warnings,
    }
    run.write_json(run.record, record)
