"""xmodal from Python: one function per command of the `xmodal` CLI (which only parses its
arguments, calls these and prints what they return).

    from xmodal import api
    result = api.run_study("configs/demo.yaml")
    print(result.summary[0]["rsum"], result.folder)

A config may be given as a path to its YAML file or as a validated `ExperimentConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy stages load when a function runs, not on import
    import pyarrow as pa

    from xmodal.align.base import Aligner
    from xmodal.executors import EmbedResult
    from xmodal.experiments.config import ExperimentConfig
    from xmodal.experiments.runner import Prepared, RunResult
    from xmodal.report.gap import GapStudy
    from xmodal.retrieval.collection import Hit
    from xmodal.shards import ShardRecord

__all__ = [
    "IndexSummary",
    "TrainResult",
    "build_index",
    "build_sharded_index",
    "dataset_info",
    "embed",
    "evaluate_model",
    "fetch_dataset",
    "gap_study",
    "load",
    "predictions",
    "run_study",
    "search",
    "serve",
    "train",
    "verify_index",
    "write_report",
]


def load(config: str | Path | ExperimentConfig) -> ExperimentConfig:
    """A validated config: `config` itself, or the YAML file it names."""
    from xmodal.experiments.config import ExperimentConfig, load_config

    return config if isinstance(config, ExperimentConfig) else load_config(config)


def run_study(
    config: str | Path | ExperimentConfig | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Run the grid of a config into a new run folder (`out`, default the config's runs_dir),
    or finish an interrupted run in its folder (`resume`; the config defaults to the one it
    ran). Returns the folder, one row per fit, the mean +- std summary and skipped inputs."""
    from xmodal.experiments.run_folder import RunFolder
    from xmodal.experiments.runner import run_experiment

    if config is None:
        if resume is None:
            raise ValueError("give a config to run, or a run folder to resume")
        config = RunFolder(resume).config
    return run_experiment(load(config), out, progress, resume, jobs)


@dataclass
class TrainResult:
    aligner: Aligner
    path: Path
    #: Recall@K etc. on the validation split (empty when the config has none)
    val_scores: dict[str, float]


def train(
    config: str | Path | ExperimentConfig,
    aligner: str,
    out: str | Path,
    *,
    metric: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Fit the aligner named `aligner` (its name or kind in the config) on the config's first
    dataset x encoder pair, save it to `out` (.safetensors) and score it on validation."""
    from xmodal.experiments.runner import fit_aligner, scores

    cfg = load(config)
    labels = [a.label for a in cfg.aligners]
    if aligner not in labels:
        raise ValueError(f"no aligner named {aligner!r} in the config; have {', '.join(labels)}")
    acfg = cfg.aligners[labels.index(aligner)]
    prep = _first_pair(cfg, progress)
    splits = prep.splits
    metric = metric or str((acfg.metrics or cfg.metrics)[0])
    fitted = fit_aligner(acfg, metric, seed, splits, progress, prep.encoder, cfg.ks, cfg.primary)
    fitted.save(out)
    val = splits.get("val")
    val_scores = scores(val, fitted, cfg.ks) if val is not None and len(val.texts) else {}
    return TrainResult(fitted, Path(out), val_scores)


def evaluate_model(
    config: str | Path | ExperimentConfig,
    model: str | Path,
    split: str = "test",
    *,
    progress: bool = True,
) -> dict[str, float]:
    """Recall@K (the config's ks), MRR and ranks of a saved aligner on a split of the config's
    first dataset x encoder pair."""
    from xmodal.align.base import load_aligner
    from xmodal.experiments.runner import scores

    cfg = load(config)
    splits = _first_pair(cfg, progress).splits
    if split not in splits:
        raise ValueError(f"no split {split!r}; have {', '.join(splits)}")
    return scores(splits[split], load_aligner(model), cfg.ks)


@dataclass
class IndexSummary:
    folder: Path
    images: int
    captions: int
    kind: str


def build_index(
    config: str | Path | ExperimentConfig,
    aligner: str | Path,
    out: str | Path,
    kind: str = "hnsw",
    *,
    progress: bool = True,
    **params: Any,
) -> IndexSummary:
    """Index every image and caption of the config's first dataset x encoder pair, aligned by
    the saved aligner, into a searchable collection folder `out`."""
    from xmodal.retrieval.collection import build_collection

    cfg = load(config)
    prep = _first_pair(cfg, progress)
    whole, ecfg = prep.whole, prep.encoder
    image_spec, text_spec = ecfg.model or ecfg.image, ecfg.model or ecfg.text
    assert image_spec is not None and text_spec is not None  # the config validated the pair
    folder = build_collection(
        whole.dataset,
        whole.images,
        whole.texts,
        image_spec,
        text_spec,
        aligner,
        out,
        kind,
        **params,
    )
    return IndexSummary(folder, len(whole.dataset.images), len(whole.dataset.captions), kind)


def embed(
    source: str,
    image: str,
    text: str,
    out: str | Path,
    *,
    images: str | Path | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    shard_size: int = 10_000,
    batch_size: int | None = None,
    dtype: str = "float16",
    device: str | None = None,
    on_shard: Callable[[ShardRecord], None] | None = None,
) -> EmbedResult:
    """Embed a dataset into a sharded folder (npy vectors, parquet metadata, a manifest with a
    checksum per shard), locally or on Ray actors; a rerun resumes what a killed run finished.
    A manifest source is streamed: the driver's memory does not grow with its rows."""
    from xmodal.executors import EmbedJob, embed_collection, run_local

    job = EmbedJob(image, text, str(out), dtype, batch_size, device)
    run: Any = run_local
    if executor == "ray":
        from xmodal.executors.ray_data import RayExecutor

        run = RayExecutor(ray_address, concurrency, cpus_per_actor, gpus_per_actor)
    elif executor != "local":
        raise ValueError(f"unknown executor {executor!r}; choose local or ray")
    return embed_collection(source, job, run, shard_size, on_shard, images=images)


def build_sharded_index(
    folder: str | Path,
    out: str | Path,
    max_memory: int | str = "4G",
    aligner: str | Path | None = None,
    *,
    nprobe: int = 16,
    queries: int = 1000,
    train_size: int = 1 << 17,
) -> dict[str, Any]:
    """Index the aligned images and captions of an `embed` folder, the index kind chosen by a
    memory budget (flat, IVF-PQ, IVF-PQ on disk); returns the plan and recall@10 of each side."""
    from xmodal.retrieval.sharded_index import build_sharded_collection, parse_bytes

    budget = parse_bytes(max_memory) if isinstance(max_memory, str) else max_memory
    return build_sharded_collection(
        folder, out, budget, aligner, nprobe=nprobe, queries=queries, train_size=train_size
    )


def verify_index(collection: str | Path) -> list[Path]:
    """Read every file of a collection or index folder whole and check its SHA-256 (opening
    one checks files over 256 MiB by size and sampled blocks only); returns the files checked.
    A damaged or missing file raises IntegrityError naming it."""
    from xmodal.retrieval.collection import verify_collection

    return verify_collection(collection)


def search(
    collection: str | Path,
    query: str | None = None,
    *,
    image: str | Path | None = None,
    k: int = 5,
    progress: bool = True,
) -> list[Hit]:
    """The k images closest to a text `query`, or the k captions closest to an `image` file,
    in a collection built by `build_index` or `build_sharded_index` (hits carry absolute image
    paths). Without `progress`, or off a terminal, the model libraries load their weights
    quietly."""
    from xmodal.progress import bars, silence_libraries
    from xmodal.retrieval.collection import open_collection

    if (query is None) == (image is None):
        raise ValueError("give a text query or an image (one of the two)")
    if not bars(progress):
        silence_libraries()
    found = open_collection(collection)
    if image is not None:
        return found.search_image(image, k)
    assert query is not None
    return found.search_text(query, k)


def serve(
    paths: list[str | Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    aligner: str | None = None,
    allow_origins: list[str] | None = None,
    device: str | None = None,
    threads: int = 1,
) -> None:
    """Serve run folders and indexes (`index build` of a config or of an embedding folder), in
    any mix (search API and web page), until Ctrl-C; needs the `serve` extra. See
    `xmodal.serve.server.serve`."""
    try:
        from xmodal.serve import serve as run
    except ImportError as e:
        raise RuntimeError(f"xmodal serve needs {e.name}: pip install 'xmodal[serve]'") from None
    run(paths, host, port, aligner, allow_origins, device, threads)


def gap_study(
    source: str | Path | ExperimentConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
) -> tuple[Path, GapStudy]:
    """Correlate each modality-gap measure with Recall@K: run a config with geometry on, or,
    given a run folder, study the results it holds. Returns the run folder and the study."""
    from xmodal.report.gap import run_gap_study, write_gap_study

    if not isinstance(source, str | Path) or not Path(source).is_dir():
        result, study = run_gap_study(load(source), out_dir=out, progress=progress)
        return result.folder, study
    return Path(source), write_gap_study(source)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a run folder's self-contained HTML report; returns its path."""
    from xmodal.report import write_report as write

    return write(run_dir, out)


def predictions(run_dir: str | Path, fit: str | None = None) -> pa.Table:
    """What one fit of a run retrieved for every test query (a pyarrow Table: one row per query
    and direction, its top-k answers with ids and scores, the rank of its first correct answer;
    `xmodal.retrieval.predictions` lists the columns), its checksum verified. `fit` names the
    fit by its model file (a results row's `model`, `models/<fit>.safetensors`, or just `<fit>`);
    by default the fit the report shows (the configuration chosen on validation, first seed)."""
    from xmodal.experiments.run_folder import MODEL_SUFFIX, RunFolder
    from xmodal.report.html import chosen_fit, load_run
    from xmodal.retrieval.predictions import read_predictions

    run = RunFolder(run_dir)
    if fit is None:
        chosen = chosen_fit(load_run(run_dir))
        if chosen is None:
            raise ValueError(f"{run.path}: every fit failed; no predictions to read")
        fit = str(chosen["model"])
    if not fit.endswith(MODEL_SUFFIX):
        fit += MODEL_SUFFIX
    return read_predictions(run.predictions(fit))


def dataset_info(source: str, images: str | Path | None = None) -> str:
    """Counts, examples and problems of a dataset ("FORMAT:PATH"), as text."""
    from xmodal.data.loaders import describe, load_dataset

    return describe(load_dataset(source, images=images))


def fetch_dataset(name: str, root: str | Path | None = None) -> Path:
    """Download a dataset that ships in a package registry (today: tuxpaint) under `root`
    (default: $XMODAL_DATA or ./data); returns its folder."""
    from xmodal.data.loaders import data_root
    from xmodal.data.tuxpaint import fetch_tuxpaint

    if name != "tuxpaint":
        raise ValueError(f"no dataset {name!r} to fetch; known: tuxpaint")
    return fetch_tuxpaint(Path(root) if root else data_root())


def _first_pair(config: ExperimentConfig, progress: bool) -> Prepared:
    """The first dataset x encoder pair of a config, embedded (cached) and split."""
    from xmodal.experiments.config import check_inputs
    from xmodal.experiments.runner import prepare
    from xmodal.store import EmbeddingStore

    check_inputs(config)
    store = EmbeddingStore(config.cache_dir)
    return next(prepare(config, store, progress, config.datasets[:1], config.encoders[:1]))
