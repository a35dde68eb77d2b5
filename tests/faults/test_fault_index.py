"""Saved indexes and collections that rot or are cut short: loading names the damaged file;
a well-formed file with impossible content (ids out of range, NaN) is refused too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from damage import flip_bytes, truncate

from xmodal.align.registry import build_aligner
from xmodal.data.dataset import Caption, Dataset, Image
from xmodal.files import IntegrityError
from xmodal.retrieval.collection import Collection, build_collection
from xmodal.retrieval.index import build_index, load_index, read_manifest, save_npy, write_manifest

KINDS = {"flat": {}, "hnsw": {"M": 8}, "ivf": {"nlist": 4}}
PAYLOAD = {"flat": "vectors.npy", "hnsw": "index.faiss", "ivf": "index.faiss"}


def _saved(path: Path, kind: str) -> np.ndarray:
    vectors = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    index = build_index(kind, 16, "cosine", **KINDS[kind])
    index.add(vectors)
    index.save(path)
    return vectors


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", [flip_bytes, truncate])
@pytest.mark.parametrize("victim", ["index.json", "ids.npy", "payload"])
def test_a_damaged_index_file_is_named(tmp_path, kind, damage, victim):
    vectors = _saved(tmp_path / "idx", kind)
    name = PAYLOAD[kind] if victim == "payload" else victim
    damage(tmp_path / "idx" / name)
    with pytest.raises(IntegrityError) as e:
        load_index(tmp_path / "idx")
    assert e.value.path == tmp_path / "idx" / name
    assert "checksum mismatch" in str(e.value)
    # undamaged, the same folder searches exactly (the test damages one file at a time)
    _saved(tmp_path / "fresh", kind)
    scores, _ = load_index(tmp_path / "fresh").search(vectors[:3], 1)
    assert (scores <= 1 + 1e-5).all()


def test_a_missing_checksum_file_is_named(tmp_path):
    _saved(tmp_path / "idx", "flat")
    (tmp_path / "idx" / "index.json.sha256").unlink()
    with pytest.raises(IntegrityError, match="index.json.sha256 is missing"):
        load_index(tmp_path / "idx")


def _reseal(folder: Path) -> None:
    """Recompute every digest: the files are well formed, only their content is wrong."""
    (folder / "index.json.sha256").unlink()
    header = json.loads((folder / "index.json").read_text())
    write_manifest(folder / "index.json", header, [folder / name for name in header["sha256"]])
    read_manifest(folder / "index.json")


def test_non_finite_vectors_are_refused(tmp_path):
    vectors = _saved(tmp_path / "idx", "flat")
    vectors[7, 3] = np.inf
    save_npy(tmp_path / "idx" / "vectors.npy", vectors)
    _reseal(tmp_path / "idx")
    with pytest.raises(IntegrityError, match=r"vectors.npy: vectors holds NaN or inf"):
        load_index(tmp_path / "idx")


def test_ids_that_disagree_with_the_header_are_refused(tmp_path):
    _saved(tmp_path / "idx", "hnsw")
    save_npy(tmp_path / "idx" / "ids.npy", np.arange(150))
    _reseal(tmp_path / "idx")
    with pytest.raises(IntegrityError, match=r"ids.npy: int64 ids of shape \(150,\)"):
        load_index(tmp_path / "idx")


def _on_disk(folder: Path) -> Path:
    """An IVF-PQ index whose inverted lists live in `lists.ivfdata`, built as a budget forces."""
    from xmodal.retrieval.sharded_index import build_from_blocks, plan_index

    x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    plan = plan_index(len(x), 16, 1000)
    assert plan.on_disk

    def blocks():
        return ((s, x[s : s + 700]) for s in range(0, len(x), 700))

    build_from_blocks(blocks, plan, "cosine", x, folder)
    return folder / "lists.ivfdata"


@pytest.mark.parametrize("damage", [flip_bytes, truncate, Path.unlink])
def test_damaged_or_missing_on_disk_lists_are_named(tmp_path, damage):
    lists = _on_disk(tmp_path / "idx")
    assert "lists.ivfdata" in read_manifest(tmp_path / "idx" / "index.json")["sha256"]
    damage(lists)
    with pytest.raises(IntegrityError) as e:
        load_index(tmp_path / "idx")
    assert e.value.path == lists
    assert ("missing" if damage is Path.unlink else "checksum mismatch") in str(e.value)


def test_large_files_are_checked_by_size_and_samples_on_load_and_whole_on_verify(
    tmp_path, monkeypatch
):
    from xmodal.retrieval import index as index_module

    lists = _on_disk(tmp_path / "idx")
    big = tmp_path / "idx" / "big.bin"  # 4 MiB: the sampled blocks (1 MiB) leave gaps
    big.write_bytes(np.random.default_rng(0).bytes(4 << 20))
    monkeypatch.setattr(index_module, "QUICK_CHECK_BYTES", 1 << 20)
    header = tmp_path / "idx" / "index.json"
    _reseal(tmp_path / "idx")
    write_manifest(header, json.loads(header.read_text()), [lists, big])
    assert list(read_manifest(header)["sampled_sha256"]) == ["big.bin"]
    flip_bytes(big, at=0.52, n=1)  # between two sampled blocks: only the full digest sees it
    read_manifest(header)
    with pytest.raises(IntegrityError, match="big.bin: checksum mismatch"):
        read_manifest(header, full=True)
    flip_bytes(big, at=0.0, n=1)  # the first block is always sampled
    with pytest.raises(IntegrityError, match="big.bin: checksum mismatch in sampled blocks"):
        read_manifest(header)
    truncate(big, keep=0.99)
    with pytest.raises(IntegrityError, match=r"big.bin: truncated or changed \(4152360 bytes"):
        read_manifest(header)


@pytest.fixture
def collection(tmp_path) -> Path:
    images = [Image(f"i{k}", tmp_path / f"i{k}.png") for k in range(30)]
    captions = [Caption(f"c{k}", f"caption {k}", f"i{k % 30}") for k in range(60)]
    ds = Dataset("toy", images, captions)
    rng = np.random.default_rng(1)
    build_aligner("identity").save(tmp_path / "identity.safetensors")
    return build_collection(
        ds,
        rng.standard_normal((30, 8)).astype(np.float32),
        rng.standard_normal((60, 8)).astype(np.float32),
        "mean-colour",
        "letters",
        tmp_path / "identity.safetensors",
        tmp_path / "coll",
        kind="flat",
    )


@pytest.mark.parametrize("victim", ["collection.json", "items.npz", "aligner.safetensors"])
def test_a_damaged_collection_file_is_named(collection, victim):
    Collection(collection)  # whole, it opens
    flip_bytes(collection / victim)
    with pytest.raises(IntegrityError) as e:
        Collection(collection)
    assert e.value.path == collection / victim


def test_collection_ids_out_of_range_are_refused(collection):
    save_npy(collection / "captions" / "ids.npy", np.arange(60) + 5)  # rows 60..64 do not exist
    _reseal(collection / "captions")
    with pytest.raises(IntegrityError, match=r"captions: ids outside 0..59"):
        Collection(collection)


def test_an_empty_query_is_refused(collection):
    with pytest.raises(ValueError, match="empty query"):
        Collection(collection).search_text("  ")
