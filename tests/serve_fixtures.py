"""A small real collection for the service tests: Tux Paint stamps, the real encoders, a run
folder (`xmodal run`) and an index built from it (`xmodal index build`)."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import yaml

from xmodal.cli import main
from xmodal.data.loaders import data_root
from xmodal.data.tuxpaint import load_tuxpaint

STAMPS = 64


def served_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, index folder), built once per test session."""
    root = tmp_path_factory.getbasetemp() / "served"
    done = root / "done"
    if not done.exists():
        root.mkdir(exist_ok=True)
        run, index = build_served(root)
        done.write_text(f"{run}\n{index}\n")
    run, index = done.read_text().split()
    return Path(run), Path(index)


def build_served(root: Path) -> tuple[Path, Path]:
    """(run folder, index folder) over STAMPS real stamps spread over the Tux Paint categories
    (PNG ones: no rendering needed); ridge under two alphas, cosine."""
    folder = data_root() / "tuxpaint"
    if not folder.is_dir():
        pytest.skip(f"Tux Paint stamps not found in {folder}: run `xmodal data fetch tuxpaint`")
    dataset = load_tuxpaint(folder)
    step = max(1, len(dataset.images) // STAMPS)
    chosen = dataset.images[::step][:STAMPS]
    caption = {c.image_id: c.text for c in dataset.captions}
    manifest = root / "stamps.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "image_id"])
        for im in chosen:
            writer.writerow([str(Path(im.path).resolve()), caption[im.id], im.id])
    config = root / "stamps.yaml"
    raw = {
        "name": "stamps",
        "datasets": [
            {
                "source": f"manifest:{manifest}",
                "split": {"train": 0.6, "val": 0.15, "test": 0.25, "seed": 0},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine"],
        "aligners": [{"kind": "ridge", "grid": {"alpha": [0.1, 10.0]}}],
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
    }
    config.write_text(yaml.safe_dump(raw))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(config), "--quiet"]) == 0
        (run,) = (root / "runs").iterdir()
        model = sorted((run / "models").glob("*.safetensors"))[0]
        index = root / "stamps-index"
        args = ["index", "build", str(config), "--aligner", str(model), "--kind", "hnsw"]
        assert main([*args, "--out", str(index), "--quiet"]) == 0
    return run, index
