"""A small real collection for the scale tests: Tux Paint stamps in a manifest, with a second
caption for some images, an undecodable image and an empty caption among them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xmodal.shards import ShardedEmbeddings

ENCODERS = ["--image", "effnet-lite0", "--text", "minilm"]
SHARD_SIZE = 5
N_IMAGES = 24


def write_tux_manifest(folder: Path, n: int = N_IMAGES, step: int = 1) -> Path:
    """n stamps (every `step`-th), a second caption for every third, an undecodable image and
    an image with an empty caption."""
    from xmodal.data.loaders import load_dataset

    try:
        ds = load_dataset("tuxpaint")
    except FileNotFoundError as e:
        pytest.skip(f"Tux Paint stamps not fetched: {e}")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    chosen = ds.images[::step][: n + 1]
    for k, im in enumerate(chosen[:n]):
        captions = [c for c in ds.captions if c.image_id == im.id]
        rows.append((str(im.path), captions[0].text, im.id))
        if k % 3 == 0:  # many captions per image
            rows.append((str(im.path), f"a drawing of {captions[0].text.lower()}", im.id))
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows.insert(7, (str(broken), "a broken picture", "broken"))
    rows.insert(3, (str(chosen[n].path), "", "empty-caption"))
    path = folder / "tux.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "image_id"])
        writer.writerows(rows)
    return path


def embed_cmd(source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "xmodal.cli", "embed", f"manifest:{source}", *ENCODERS,
        "--out", str(out), "--shard-size", str(SHARD_SIZE), "--quiet", *extra,
    ]  # fmt: skip


def assert_same_collection(a: Path, b: Path) -> None:
    """Same rows in the same order, vectors equal within float16 rounding, no gaps or repeats."""
    ra, rb = ShardedEmbeddings(a), ShardedEmbeddings(b)
    assert [r.index for r in rb.records] == list(range(len(ra.records)))
    (da, ia, ta), (db, ib, tb) = ra.load(), rb.load()
    assert [im.id for im in da.images] == [im.id for im in db.images]
    assert [(c.id, c.image_id, c.text) for c in da.captions] == [
        (c.id, c.image_id, c.text) for c in db.captions
    ]
    assert len({c.id for c in db.captions}) == len(db.captions)
    np.testing.assert_allclose(ia, ib, rtol=1e-2, atol=2e-3)
    np.testing.assert_allclose(ta, tb, rtol=1e-2, atol=2e-3)


def kill_when(cmd: list[str], out: Path, shards_done: int, env: dict, timeout: float = 900) -> int:
    """Start `cmd`; SIGKILL its process group once the manifest records `shards_done` shards.
    Returns the number of shards recorded at the kill (the run must not have finished)."""
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = _recorded(out)
            if done >= shards_done:
                os.killpg(proc.pid, 9)
                proc.wait()
                return done
            if proc.poll() is not None:
                raise AssertionError(f"finished before the kill: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError("no shard finished in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def _recorded(out: Path) -> int:
    import json

    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0
