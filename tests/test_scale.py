"""Sharded embeddings, both executors, the `embeddings:` source, and indexes built from shards."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scale_fixtures import (
    ENCODERS,
    SHARD_SIZE,
    assert_same_collection,
    embed_cmd,
    kill_when,
    write_tux_manifest,
)

from xmodal.cli import main
from xmodal.embeddings import Embedded
from xmodal.files import IntegrityError
from xmodal.retrieval.index import load_index
from xmodal.retrieval.sharded_index import (
    build_from_blocks,
    exact_topk,
    parse_bytes,
    plan_index,
    recall_at_k,
)
from xmodal.shards import ShardedEmbeddings


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tux_source(tmp_path_factory) -> Path:
    return write_tux_manifest(tmp_path_factory.mktemp("tux"))


@pytest.fixture(scope="session")
def local_out(tux_source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "local"
    argv = ["embed", f"manifest:{tux_source}", *ENCODERS, "--out", str(out), "--quiet"]
    assert main([*argv, "--shard-size", str(SHARD_SIZE)]) == 0
    return out


def test_layout_manifest_and_skipped_inputs(local_out, tux_source):
    manifest = json.loads((local_out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["planned_shards"] == 5  # 24 good + 1 broken image
    assert manifest["image_encoder"]["fingerprint"].startswith("image:effnet-lite0:")
    assert manifest["text_encoder"]["dim"] == 384 and "torch" in manifest["versions"]
    for k, record in enumerate(manifest["shards"]):
        assert record["index"] == k
        for part in ("img_emb", "text_emb"):
            assert (local_out / part / f"{part}_{k:05d}.npy").is_file()
        assert sorted(record["files"]) == sorted(
            [f"img_emb/img_emb_{k:05d}.npy", f"text_emb/text_emb_{k:05d}.npy",
             f"metadata/metadata_{k:05d}.parquet"]
        )  # fmt: skip
    problems = [json.loads(line) for line in (local_out / "problems.jsonl").open()]
    wheres = " ".join(p["where"] for p in problems)
    assert "broken.png" in wheres and "empty caption" in " ".join(p["message"] for p in problems)
    dataset, images, texts = ShardedEmbeddings(local_out).load()
    assert len(dataset.images) == 24 and "broken" not in {im.id for im in dataset.images}
    assert len(dataset.captions) == 24 + 8  # a second caption on every third image
    assert images.dtype == np.float32 and images.shape == (24, 1280) and texts.shape == (32, 384)
    assert np.isfinite(images).all() and np.isfinite(texts).all()


def test_metadata_links_each_caption_to_its_image(local_out):
    import pyarrow.parquet as pq

    meta = pq.read_table(local_out / "metadata" / "metadata_00000.parquet").to_pydict()
    assert list(meta) == ["row", "caption_id", "caption", "image_id", "path", "image_row"]
    assert meta["row"] == list(range(len(meta["row"])))
    images = np.load(local_out / "img_emb" / "img_emb_00000.npy")
    assert max(meta["image_row"]) == len(images) - 1
    by_row = {}
    for row, im in zip(meta["image_row"], meta["image_id"], strict=True):
        assert by_row.setdefault(row, im) == im  # one image per row
    # the same image file embedded alone gives the stored row (float16 rounding)
    from xmodal.encoders.registry import build_image_encoder

    first = meta["path"][meta["image_row"].index(0)]
    alone = build_image_encoder("effnet-lite0").encode_images([first])
    np.testing.assert_allclose(images[0], alone[0], rtol=1e-2, atol=2e-3)


def test_ray_executor_gives_the_local_output(ray_local, local_out, tux_source, tmp_path):
    from xmodal.executors import EmbedJob, embed_collection
    from xmodal.executors.ray_data import RayExecutor

    job = EmbedJob("effnet-lite0", "minilm", str(tmp_path / "ray"))
    result = embed_collection(f"manifest:{tux_source}", job, RayExecutor(concurrency=2), SHARD_SIZE)
    assert result.shards == 5 and result.kept == 0 and result.images == 24
    assert_same_collection(local_out, tmp_path / "ray")
    assert (tmp_path / "ray" / "problems.jsonl").read_text() == (
        local_out / "problems.jsonl"
    ).read_text()


def test_corrupted_shard_is_named_and_redone(local_out, tux_source, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(local_out, out)
    victim = out / "text_emb" / "text_emb_00002.npy"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    reader = ShardedEmbeddings(out)
    reader.shard(1)  # the others still read
    with pytest.raises(IntegrityError, match="text_emb_00002.npy: checksum mismatch"):
        reader.shard(2)
    with pytest.raises(IntegrityError, match="text_emb_00002.npy"):
        reader.load()
    (out / "img_emb" / ".img_emb_00004.npy.123.tmp").write_bytes(b"half a write")
    argv = ["embed", f"manifest:{tux_source}", *ENCODERS, "--out", str(out)]
    assert main([*argv, "--shard-size", str(SHARD_SIZE)]) == 0
    printed = capsys.readouterr().out
    assert "shard 2 redone" in printed and "text_emb_00002.npy" in printed
    assert "(4 kept from an earlier run)" in printed
    assert not list((out / "img_emb").glob(".*.tmp"))
    assert_same_collection(local_out, out)


def test_another_job_in_the_same_folder_is_refused(local_out, tux_source, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(local_out, out)
    with pytest.raises(ValueError, match="shard_size was 5, now 7"):
        from xmodal.executors import EmbedJob, embed_collection, run_local

        job = EmbedJob("effnet-lite0", "minilm", str(out))
        embed_collection(f"manifest:{tux_source}", job, run_local, 7)


def test_embeddings_folder_is_a_run_source(local_out, tmp_path):
    from xmodal.experiments import run_experiment
    from xmodal.experiments.config import ConfigError, parse_config

    raw = {
        "name": "from-shards",
        "datasets": [
            {"source": f"embeddings:{local_out}", "split": {"train": 0.4, "val": 0.1, "test": 0.5}}
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine"],
        "aligners": [{"kind": "ridge"}],
        "seeds": [0],
        "cache_dir": str(tmp_path / "no-cache"),
    }
    result = run_experiment(parse_config(raw), tmp_path / "run", progress=False)
    row = result.rows[0]
    assert row["n_images"] == 12 and 0 <= row["t2i_R@1"] <= 100
    assert not (tmp_path / "no-cache").exists()  # nothing was encoded
    assert any("broken.png" in p.where for p in result.problems)
    raw["encoders"] = [{"image": "effnet-lite0", "text": "st:other"}]
    with pytest.raises(ConfigError, match="embedded with image 'effnet-lite0' and text 'minilm'"):
        run_experiment(parse_config(raw), tmp_path / "run2", progress=False)


def test_index_build_from_shards_reports_recall_both_ways(local_out, tmp_path, capsys):
    from xmodal.align.registry import build_aligner
    from xmodal.experiments.pipeline import load_embedded

    whole, _ = load_embedded(local_out)
    aligner = build_aligner("ridge", metric="cosine").fit(whole.all)
    aligner.save(tmp_path / "ridge.safetensors")
    base = ["index", "build", str(local_out), "--aligner", str(tmp_path / "ridge.safetensors")]
    assert main([*base, "--out", str(tmp_path / "flat"), "--max-index-memory", "1G"]) == 0
    flat = json.loads(capsys.readouterr().out)
    assert flat["images"]["kind"] == "flat" and flat["images"]["t2i_recall@10"] == 1.0
    assert flat["captions"]["i2t_recall@10"] == 1.0 and flat["captions"]["queries"] == 24
    assert main([*base, "--out", str(tmp_path / "pq"), "--max-index-memory", "2K"]) == 0
    pq = json.loads(capsys.readouterr().out)
    for side, key in (("images", "t2i_recall@10"), ("captions", "i2t_recall@10")):
        assert pq[side]["kind"] == "ivfpq" and 0.0 <= pq[side][key] <= 1.0
        assert load_index(tmp_path / "pq" / side).kind == "ivf"
    header = json.loads((tmp_path / "pq" / "collection.json").read_text())
    assert {key: header[key] for key in pq} == pq and "aligner.safetensors" in header["sha256"]


def test_index_build_without_aligner_needs_one_space(local_out, tmp_path, capsys):
    assert main(["index", "build", str(local_out), "--out", str(tmp_path / "x")]) == 2
    assert "1280-d and captions 384-d" in capsys.readouterr().err


def test_plan_follows_the_memory_budget():
    assert plan_index(1000, 64, parse_bytes("1M")).kind == "flat"
    in_ram = plan_index(1_000_000, 512, parse_bytes("200M"))
    assert in_ram.kind == "ivfpq" and not in_ram.on_disk and in_ram.ram_bytes <= 200 << 20
    assert in_ram.pq_m == 64 and in_ram.nlist == 2048  # 4 sqrt(n), capped by the sample
    smaller = plan_index(1_000_000, 512, parse_bytes("30M"))
    assert smaller.pq_m < in_ram.pq_m and smaller.ram_bytes <= 30 << 20
    disk = plan_index(100_000_000, 512, parse_bytes("1G"))
    assert disk.on_disk and disk.ram_bytes <= 1 << 30
    with pytest.raises(ValueError, match="approximate indexes support cosine and euclidean"):
        plan_index(1_000_000, 512, parse_bytes("1M"), "manhattan")
    assert parse_bytes("1.5K") == 1536 and parse_bytes("2GiB") == 2 << 30
    with pytest.raises(ValueError, match="expected a size"):
        parse_bytes("lots")


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d)).astype(np.float32)
    return centers[rng.integers(0, 64, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)


def test_on_disk_index_equals_the_in_memory_one_and_moves(tmp_path):
    x = _clustered(20_000, 32, 0)
    queries = _clustered(200, 32, 1)

    def blocks():
        return ((s, x[s : s + 3000]) for s in range(0, len(x), 3000))

    ram = plan_index(len(x), 32, parse_bytes("1M"))
    disk = plan_index(len(x), 32, parse_bytes("100K"))
    assert disk.on_disk and not ram.on_disk and (ram.nlist, ram.pq_m) == (disk.nlist, disk.pq_m)
    train = x[::4]
    a = build_from_blocks(blocks, ram, "cosine", train, tmp_path / "ram", nprobe=8)
    build_from_blocks(blocks, disk, "cosine", train, tmp_path / "disk", nprobe=8)
    assert (tmp_path / "disk" / "lists.ivfdata").is_file()
    assert not (tmp_path / "disk" / "parts").exists()
    shutil.move(tmp_path / "disk", tmp_path / "moved")
    b = load_index(tmp_path / "moved")
    sa, ia = a.search(queries, 10)
    sb, ib = b.search(queries, 10)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    exact = exact_topk(queries, blocks, 10, "cosine")[1]
    assert recall_at_k(ib, exact) > 0.5
    assert recall_at_k(exact, exact) == 1.0


def test_exact_topk_over_blocks_equals_one_pass():
    from xmodal.similarity import topk

    x, q = _clustered(5000, 16, 2), _clustered(50, 16, 3)
    whole = topk(q, x, 10, "euclidean")[1]

    def blocks():
        return ((s, x[s : s + 700]) for s in range(0, len(x), 700))

    np.testing.assert_array_equal(exact_topk(q, blocks, 10, "euclidean")[1], whole)


def test_recall_on_ray_equals_local(ray_local):
    from xmodal.retrieval.distributed import retrieval_scores_on_ray
    from xmodal.similarity.ranking import retrieval_scores

    rng = np.random.default_rng(0)
    images = rng.standard_normal((300, 8)).astype(np.float32)
    owner = np.repeat(np.arange(300), 2)[:550]
    texts = images[owner] + rng.standard_normal((550, 8)).astype(np.float32)
    texts[5] = texts[6]  # identical captions: ties count against the query in both
    data = Embedded(images, texts, owner)

    def scorer(t: np.ndarray, i: np.ndarray) -> np.ndarray:
        return t @ i.T

    local = retrieval_scores(data, scorer)
    assert retrieval_scores_on_ray(data, scorer, block=64) == local


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_kill_9_and_rerun_equals_an_uninterrupted_run(executor, tux_source, local_out, tmp_path):
    """SIGKILL twice, at whatever point the writes have reached, then finish: same output."""
    import subprocess

    out = tmp_path / "out"
    cmd = embed_cmd(tux_source, out, "--executor", executor, "--concurrency", "1")
    env = os.environ.copy()
    first = kill_when(cmd, out, 1, env)
    second = kill_when(cmd, out, first + 1, env)
    assert 1 <= first < second < 5
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 5
    assert_same_collection(local_out, out)
    for part in ("img_emb", "text_emb", "metadata"):
        assert len(list((out / part).iterdir())) == 5  # no leftovers of the killed writes


def test_a_change_of_preprocessing_midway_is_refused(tmp_path):
    from xmodal.data.dataset import Caption, Dataset, Image
    from xmodal.executors import EmbedJob, embed_collection
    from xmodal.shards import ShardRecord

    images = [Image(f"i{k}", tmp_path / f"{k}.png") for k in range(4)]
    ds = Dataset("toy", images, [Caption(f"c{k}", "a caption", f"i{k}") for k in range(4)])

    def executor(job, tasks):  # a plug-in executor whose second shard used other preprocessing
        for t in tasks:
            encoders = {"image": f"image:a:v{t.index}", "text": "text:b:v1"}
            yield ShardRecord(t.index, 2, 2, {}, encoders, {"image": 2, "text": 2})

    with pytest.raises(ValueError, match="preprocessing changed"):
        job = EmbedJob("a", "b", str(tmp_path / "out"))
        embed_collection("toy", job, executor, 2, dataset=ds)


def test_the_driver_streams_the_listing_and_passes_shards_by_number(tmp_path):
    """The driver's memory does not grow with the pairs: executors get shard numbers and
    checksums (PlannedShard), and each shard's rows are read from its listing file."""
    import tracemalloc

    from data_fixtures import write_png, write_text

    from xmodal.executors import EmbedJob, embed_collection
    from xmodal.shards import PlannedShard, ShardRecord

    image = write_png(tmp_path / "one.png")
    first: list = []

    def rows_only(job, shards):  # an executor that reads each shard's rows and embeds nothing
        for shard in shards:
            assert type(shard) is PlannedShard
            task = shard.task(Path(job.folder))
            if task.index == 0:
                first[:] = [len(task.images), task.captions[:2]]
            dims = {"image": 2, "text": 2}
            encoders = {"image": "image:a", "text": "text:b"}
            yield ShardRecord(task.index, len(task.images), len(task.captions), {}, encoders, dims)

    peaks = []
    for n in (200, 2_000, 20_000):  # the first run loads the libraries: not measured
        rows = [f"{image},pair {k} with a caption of some length,im{k // 2}" for k in range(n)]
        source = write_text(tmp_path / f"m{n}.csv", "image,caption,image_id\n" + "\n".join(rows))
        out = tmp_path / f"out{n}"
        tracemalloc.start()
        result = embed_collection(
            f"manifest:{source}", EmbedJob("a", "b", str(out)), rows_only, 500
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert (result.shards, result.images, result.captions) == (-(-n // 1000), n // 2, n)
        assert not (out / "listing").exists()  # the driver's workspace goes once complete
    assert first == [
        500,
        [
            ("m20000.csv:2", "pair 0 with a caption of some length", "im0"),
            ("m20000.csv:3", "pair 1 with a caption of some length", "im0"),
        ],
    ]
    # in memory, the dataset and the plan cost ~1 KB per pair: 20 MB at 20k, ten times 2k
    assert peaks[2] < 1.5 * peaks[1] and peaks[2] < 4 << 20, peaks


@pytest.fixture(scope="session")
def ridge(local_out, tmp_path_factory) -> Path:
    from xmodal.align.registry import build_aligner
    from xmodal.experiments.pipeline import load_embedded

    whole, _ = load_embedded(local_out)
    path = tmp_path_factory.mktemp("ridge") / "ridge.safetensors"
    build_aligner("ridge", metric="cosine").fit(whole.all).save(path)
    return path


def test_search_an_index_of_shards_as_a_collection(local_out, ridge, tmp_path, capsys):
    """`xmodal search` on an index built from shards: exact (flat) hits equal a search of the
    aligned vectors in memory, in the output format of a collection; on-disk IVF-PQ too."""
    from xmodal.align.base import load_aligner
    from xmodal.encoders.registry import build_image_encoder, build_text_encoder
    from xmodal.similarity import topk

    for budget, name in (("1G", "flat"), ("2K", "disk")):
        argv = ["index", "build", str(local_out), "--aligner", str(ridge), "--quiet"]
        assert main([*argv, "--max-index-memory", budget, "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "disk" / "images" / "lists.ivfdata").is_file()
    capsys.readouterr()
    dataset, images, texts = ShardedEmbeddings(local_out).load()
    aligner = load_aligner(ridge)
    query, picture = "a red apple", dataset.images[3].path

    q = aligner.transform_texts(build_text_encoder("minilm").encode_texts([query]))
    want = topk(q, aligner.transform_images(images), 5, "cosine")[1][0]
    assert main(["search", str(tmp_path / "flat"), query, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:] for line in lines] == [
        [dataset.images[r].id, str(dataset.images[r].path)] for r in want
    ]
    v = aligner.transform_images(build_image_encoder("effnet-lite0").encode_images([picture]))
    want = topk(v, aligner.transform_texts(texts), 3, "cosine")[1][0]
    assert main(["search", str(tmp_path / "flat"), "--image", str(picture), "-k", "3"]) == 0
    shown = [c.text + f"  [{c.image_id}]" for c in (dataset.captions[r] for r in want)]
    assert [line[11:] for line in capsys.readouterr().out.splitlines()] == shown

    assert main(["search", str(tmp_path / "disk"), query, "--quiet"]) == 0
    paths = {im.id: str(im.path) for im in dataset.images}
    hits = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 5 and all(paths[image_id] == path for _, image_id, path in hits)


def test_hits_read_the_metadata_of_their_shards_only(local_out, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(local_out, out)
    (out / "metadata" / "metadata_00004.parquet").write_bytes(b"not parquet")
    shards = ShardedEmbeddings(out)
    dataset = ShardedEmbeddings(local_out).load()[0]
    first = [(im.id, str(im.path)) for im in dataset.images[:2]]
    assert shards.image_items([1, 0, 1]) == [first[1], first[0], first[1]]
    caption = dataset.captions[2]
    image = next(im for im in dataset.images if im.id == caption.image_id)
    assert shards.caption_items([2]) == [(caption.text, caption.image_id, str(image.path))]
    with pytest.raises(IntegrityError, match="metadata_00004.parquet: checksum mismatch"):
        shards.image_items([0, len(dataset.images) - 1])  # the last image is in shard 4


def test_an_index_of_shards_needs_its_embedding_folder(local_out, ridge, tmp_path, capsys):
    source = tmp_path / "emb"
    shutil.copytree(local_out, source)
    api_build = ["index", "build", str(source), "--aligner", str(ridge), "--quiet"]
    assert main([*api_build, "--max-index-memory", "2K", "--out", str(tmp_path / "ix")]) == 0
    capsys.readouterr()
    assert main(["index", "verify", str(tmp_path / "ix")]) == 0
    # collection.json, the aligner, and per side index.json, index.faiss, lists.ivfdata, ids.npy
    assert capsys.readouterr().out.startswith("10 files")
    shutil.move(source, tmp_path / "elsewhere")
    assert main(["search", str(tmp_path / "ix"), "a cat", "--quiet"]) == 2
    assert "the embedding folder this index was built from" in capsys.readouterr().err
