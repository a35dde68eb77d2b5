"""`xmodal run CONFIG`: datasets x encoder pairs x aligners x metrics x seeds -> a run folder.

The run folder holds results.csv / results.json / results.md (one row per fitted aligner, and a
mean +- std summary over seeds), the resolved config, versions, seeds, timings and every
skipped input (problems.jsonl). Only the test split is evaluated for the results; the
validation split serves model selection inside the aligners.

Each fit appends its row to rows.jsonl as soon as its model is saved, so an interrupted run
resumes (`run_experiment(..., resume=RUN_DIR)`, `xmodal run --resume RUN_DIR`): finished fits
are reused, the others run, and no row is lost or counted twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from xmodal.align.base import Aligner, FitContext, FitDiverged, primary_columns
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
)
from xmodal.experiments.findings import findings_markdown
from xmodal.experiments.pipeline import EMBEDDINGS, EmbeddedDataset, embed_dataset, load_embedded
from xmodal.experiments.tables import summarize, write_tables
from xmodal.retrieval.evaluate import evaluate
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
    """Load, embed (cached) and split every dataset x encoder pair of a config, lazily."""
    for dcfg in datasets or config.datasets:
        if dcfg.source.startswith(EMBEDDINGS):
            yield _prepared_embeddings(dcfg, encoders or config.encoders)
            continue
        t = time.perf_counter()
        dataset = load_dataset(dcfg.source, images=dcfg.images, **dcfg.options)
        load_s = time.perf_counter() - t
        for ecfg in encoders or config.encoders:
            t = time.perf_counter()
            image_enc, text_enc = build_pair(ecfg.image, ecfg.text, ecfg.model, config.device)
            embedded = embed_dataset(dataset, image_enc, text_enc, store, progress=progress)
            timings = {
                f"load {dcfg.label}": load_s,
                f"embed {dcfg.label} / {ecfg.label}": time.perf_counter() - t,
            }
            yield Prepared(
                dcfg.label,
                ecfg,
                embedded,
                embedded.split(dcfg.split.fractions(), dcfg.split.seed),
                embedded.dataset.problems,
                timings,
            )


def _prepared_embeddings(dcfg: DatasetConfig, encoders: list[EncoderConfig]) -> Prepared:
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
    return Prepared(
        dcfg.label,
        match[0],
        whole,
        whole.split(dcfg.split.fractions(), dcfg.split.seed),
        whole.dataset.problems,
        {f"load {dcfg.label}": time.perf_counter() - t},
    )


def fit_aligner(
    acfg: AlignerConfig,
    metric: Metric | str,
    seed: int,
    splits: dict[str, Embedded],
    progress: bool = False,
    encoders: EncoderConfig | None = None,
    ks: list[int] | tuple[int, ...] = (1, 5, 10),
) -> Aligner:
    """Build one aligner of a config entry and fit it on train (val for model selection, on
    RSUM over `ks`). `encoders` names the pair that made the vectors, for aligners that use
    the models. Raises FitDiverged when the fit ends with NaN or inf in its state."""
    val = splits.get("val")
    context = FitContext(
        seed=seed,
        progress=progress,
        val=val if val is not None and len(val.texts) else None,
        ks=tuple(ks),
        image_encoder=encoders.image if encoders is not None else None,
        text_encoder=encoders.text if encoders is not None else None,
    )
    aligner = build_aligner(acfg.kind, metric=metric, **acfg.params)
    return aligner.fit(splits["train"], context).require_finite_state()


#: one JSON line per finished fit, appended when its model is saved: what a resumed run reuses
ROW_LOG = "rows.jsonl"


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
    sum in another order, which can flip a near-tie)."""
    jobs = config.jobs if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    started = time.perf_counter()
    if resume is None:
        folder = _new_run_folder(Path(out_dir or config.runs_dir), config.name)
        (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    else:
        folder = Path(resume)
        _check_same_config(folder, config)
    finished = _finished_rows(folder)
    rows, problems, timings = [], [], {}
    for prep in prepare(config, EmbeddingStore(config.cache_dir), progress):
        problems = list(dict.fromkeys([*problems, *prep.problems]))
        timings |= prep.timings
        encoder = prep.encoder.label
        _save_test_split(split_path(folder, prep.dataset, encoder), prep.parts["test"])
        splits = prep.splits
        context = {"dataset": prep.dataset, "encoder": encoder, **_sizes(splits)}
        if config.geometry:
            context |= _geometry(splits["test"], "raw")
        shared = FitInputs(splits, prep.encoder, context, config.ks, config.geometry, folder)
        rows += _run_fits(_grid(config, context), shared, finished, jobs, progress)
    summary = summarize(rows)
    write_tables(folder, rows, summary)
    (folder / "findings.md").write_text(findings_markdown(summary))
    write_problems(problems, folder / "problems.jsonl")
    timings["total"] = time.perf_counter() - started
    reused = sum(row["model"] in finished for row in rows)
    _write_run_record(folder, config, timings, len(problems), reused)
    return RunResult(folder, rows, summary, problems)


@dataclass(frozen=True)
class Fit:
    """One cell of the grid: an aligner entry under one metric and seed, and its model file
    (relative to the run folder, which also names the row)."""

    aligner: AlignerConfig
    metric: Metric
    seed: int
    model: str


@dataclass(frozen=True)
class FitInputs:
    """What every fit of one dataset x encoder pair shares (sent once to each worker)."""

    splits: dict[str, Embedded]
    encoder: EncoderConfig
    context: dict[str, Any]
    ks: list[int]
    geometry: bool
    folder: Path


def _grid(config: ExperimentConfig, context: dict[str, Any]) -> list[Fit]:
    fits = []
    for acfg in config.aligners:
        for metric in acfg.metrics or config.metrics:
            for seed in acfg.seeds or config.seeds:
                row_id = (
                    f"{context['dataset']}__{context['encoder']}__{acfg.label}__{metric}__s{seed}"
                )
                fits.append(Fit(acfg, Metric(metric), seed, f"models/{slug(row_id)}.safetensors"))
    return fits


def _run_fits(
    fits: list[Fit],
    shared: FitInputs,
    finished: dict[str, dict[str, Any]],
    jobs: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """The rows of `fits` in grid order: logged ones reused, the others fitted (in `jobs`
    processes when > 1), each logged as it finishes."""
    done = {f.model: finished[f.model] for f in fits if f.model in finished}
    todo = [f for f in fits if f.model not in done]

    def record(fit: Fit, row: dict[str, Any]) -> None:
        _log_row(shared.folder, row)
        done[fit.model] = row

    if jobs == 1 or len(todo) < 2:
        for fit in todo:
            record(fit, _fit_row(fit, shared, progress))
    else:
        _fit_in_processes(todo, shared, jobs, progress, record)
    return [done[f.model] for f in fits]


def _fit_in_processes(
    todo: list[Fit],
    shared: FitInputs,
    jobs: int,
    progress: bool,
    record: Callable[[Fit, dict[str, Any]], None],
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    workers = min(jobs, len(todo))
    pool = ProcessPoolExecutor(
        workers,
        multiprocessing.get_context("spawn"),  # fork would copy torch's and BLAS's thread state
        initializer=_start_worker,
        initargs=(shared, max(1, (os.cpu_count() or 1) // workers)),
    )
    try:
        futures = {pool.submit(_fit_in_worker, fit): fit for fit in todo}
        with tqdm(total=len(todo), desc=f"fits ({jobs} jobs)", disable=not progress) as bar:
            for future in as_completed(futures):
                record(futures[future], future.result())
                bar.update()
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
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(threads)
    _WORKER_INPUTS = shared


def _fit_in_worker(fit: Fit) -> dict[str, Any]:
    assert _WORKER_INPUTS is not None, "worker not started by _start_worker"
    return _fit_row(fit, _WORKER_INPUTS, progress=False)


def _fit_row(fit: Fit, shared: FitInputs, progress: bool) -> dict[str, Any]:
    """Fit one aligner, evaluate it on test (and val), save its model; its results row."""
    splits, acfg = shared.splits, fit.aligner
    row = {
        **shared.context,
        "aligner": acfg.label,
        "kind": acfg.kind,
        "loss": acfg.params.get("loss", ""),
        "metric": str(fit.metric),
        "seed": fit.seed,
    }
    t = time.perf_counter()
    try:
        aligner = fit_aligner(
            acfg, fit.metric, fit.seed, splits, progress, shared.encoder, shared.ks
        )
    except FitDiverged as e:  # a row that says so, with no numbers to mistake for results
        nan = dict.fromkeys(primary_columns(shared.ks), float("nan"))
        return row | {"status": f"failed: {e}", **nan, "model": fit.model}
    fit_s = time.perf_counter() - t
    test = aligner.transform(splits["test"])
    scores = evaluate(test, aligner.scorer(), shared.ks)
    scores |= _validation(aligner, splits.get("val"), shared.ks)
    model_path = shared.folder / fit.model
    model_path.parent.mkdir(exist_ok=True)
    aligner.save(model_path)
    report = getattr(aligner, "fit_report_", {})
    row |= {"status": "ok", **scores, **report, "fit_seconds": round(fit_s, 3), "model": fit.model}
    if shared.geometry:
        row |= _geometry(test, "aligned")
    return row


def _check_same_config(folder: Path, config: ExperimentConfig) -> None:
    try:
        ran = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{folder}: not a run folder to resume ({e.strerror or e})") from None
    now = config.model_dump(mode="json")
    changed = sorted(k for k in {*ran, *now} if ran.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"{folder} ran another config (differs in: {', '.join(changed)}); "
            "resume it with its own config.yaml, or start a new run"
        )


def _finished_rows(folder: Path) -> dict[str, dict[str, Any]]:
    """Logged rows whose model file exists, by model path. A last line cut short by an
    interruption is dropped from the log (its fit runs again)."""
    path = folder / ROW_LOG
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON row ({e.msg}); remove the line") from None
    return {row["model"]: row for row in rows if (folder / row["model"]).exists()}


def _log_row(folder: Path, row: dict[str, Any]) -> None:
    with open(folder / ROW_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _validation(aligner: Aligner, val: Embedded | None, ks: list[int]) -> dict[str, float]:
    """Validation scores, kept beside the test scores so choices can be made without test."""
    if val is None or not len(val.texts):
        return {}
    scores = evaluate(aligner.transform(val), aligner.scorer(), ks)
    return {f"val_{k}": scores[k] for k in ("t2i_R@1", "i2t_R@1", "rsum")}


def _geometry(data: Embedded, prefix: str) -> dict[str, float]:
    """Every applicable modality-gap measure of a split, as `<prefix>_<measure>` columns."""
    from xmodal.geometry import gap_measures

    measures = gap_measures(data.images, data.texts, data.caption_image)
    return {f"{prefix}_{k}": v for k, v in measures.items()}


def _sizes(splits: dict[str, Embedded]) -> dict[str, int]:
    return {f"{name}_images": len(e.images) for name, e in splits.items()}


def _save_test_split(path: Path, test: EmbeddedDataset) -> None:
    """The test split's raw vectors, image paths and captions, for geometry and the report."""
    path.parent.mkdir(exist_ok=True)
    np.savez(
        path,
        images=test.images,
        texts=test.texts,
        caption_image=test.dataset.caption_image,
        image_paths=np.array([str(Path(im.path).resolve()) for im in test.dataset.images]),
        captions=np.array([c.text for c in test.dataset.captions]),
    )


def split_path(run_dir: Path, dataset: str, encoder: str) -> Path:
    """Where a run keeps the test split of one dataset x encoder pair."""
    return run_dir / "embeddings" / f"{slug(dataset)}__{slug(encoder)}.npz"


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    import re

    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def _new_run_folder(root: Path, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = root / f"{slug(name)}-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"{slug(name)}-{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def _write_run_record(
    folder: Path, config: ExperimentConfig, timings: dict, n_problems: int, reused: int
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
    }
    (folder / "run.json").write_text(json.dumps(record, indent=2))
