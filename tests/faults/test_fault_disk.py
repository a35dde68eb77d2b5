"""A full or read-only disk: the error says why and where, no temporary file is left behind,
what was saved before stays whole, and a rerun with room finishes the job. Saved files get the
umask's permissions."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from damage import TEXTS, Letters, disk_full, tiny_config

from xmodal.files import IntegrityError
from xmodal.retrieval.index import build_index, load_index
from xmodal.store import EmbeddingStore


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def _full_after(monkeypatch, calls: int, target=np, name="savez") -> None:
    """The disk fills up after `calls` successful calls of target.name; the failing one has
    already written half of its bytes."""
    real, count = getattr(target, name), [0]

    def write(file, *args, **kwargs):
        count[0] += 1
        if count[0] <= calls:
            return real(file, *args, **kwargs)
        file.write(b"PK\x03\x04 half a shard")
        disk_full()

    monkeypatch.setattr(target, name, write)


def test_a_full_disk_while_caching_names_the_shard_and_loses_nothing(tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path, shard_size=10)
    folder = store.folder(Letters().fingerprint)
    _full_after(monkeypatch, calls=2)
    with pytest.raises(OSError) as e:
        store.texts(Letters(), TEXTS)
    assert e.value.errno == errno.ENOSPC
    assert Path(e.value.filename).parent == folder and "shard-" in e.value.filename
    assert [n for n in _files(folder) if n.startswith("shard-")] == sorted(
        n for n in _files(folder) if n.endswith(".npz")
    )
    assert not [n for n in _files(folder) if n.endswith(".tmp")]
    monkeypatch.undo()  # room again: the rerun embeds only the two missing chunks
    enc = Letters()
    out = EmbeddingStore(tmp_path, shard_size=10).texts(enc, TEXTS)
    assert sorted(enc.seen) == sorted(TEXTS[20:])
    np.testing.assert_array_equal(out, EmbeddingStore(tmp_path / "clean").texts(Letters(), TEXTS))


def test_a_full_disk_while_saving_an_index(tmp_path, monkeypatch):
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    old = build_index("flat", 8)
    old.add(vectors)
    old.save(tmp_path / "idx")
    new = build_index("flat", 8)
    new.add(vectors[::-1] * 2)
    _full_after(monkeypatch, calls=1, name="save")  # vectors.npy is written, ids.npy is not
    with pytest.raises(OSError) as e:
        new.save(tmp_path / "idx")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "idx" / "ids.npy"))
    monkeypatch.undo()
    assert not [n for n in _files(tmp_path) if n.endswith(".tmp")]
    # half old, half new: never a silent mix, the changed file is named
    with pytest.raises(IntegrityError, match="vectors.npy: checksum mismatch"):
        load_index(tmp_path / "idx")


@pytest.mark.slow
def test_the_cli_says_disk_full_and_where(tmp_path, monkeypatch, capsys):
    from xmodal.cli import main

    config = tiny_config(tmp_path)
    _full_after(monkeypatch, calls=0)
    assert main(["run", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the model-loading bars
    assert err.startswith("xmodal: error: No space left on device (free some space")
    assert f": {tmp_path / 'cache'}" in err and ".npz" in err and "Traceback" not in err
    assert not [n for n in _files(tmp_path / "cache") if n.endswith(".tmp")]


def test_the_cli_says_read_only_and_where(tmp_path, monkeypatch, capsys):
    from xmodal import cli

    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "runs"))

    monkeypatch.setattr(cli, "_cmd_data_info", read_only)
    assert cli.main(["data", "info", "folder:x"]) == 2
    err = capsys.readouterr().err
    assert f"Read-only file system (choose a writable folder): {tmp_path / 'runs'}" in err


def test_saved_files_get_the_umask_permissions(tmp_path):
    from xmodal.data.dataset import Problem, write_problems

    old = os.umask(0o022)
    try:
        store = EmbeddingStore(tmp_path / "cache")
        store.texts(Letters(), TEXTS[:3])
        index = build_index("hnsw", 6)
        index.add(np.ones((3, 6), np.float32))
        index.save(tmp_path / "idx")
        write_problems([Problem("x", "y")], tmp_path / "problems.jsonl")
    finally:
        os.umask(old)
    saved = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(saved) >= 6
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in saved} == {
        p.name: oct(0o644) for p in saved
    }
