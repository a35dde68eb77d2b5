"""The search service over indexes of an embedding folder: real Tux Paint stamps embedded in
shards (`xmodal embed`, the real encoders, a broken image and several captions per image among
them), indexed flat, as IVF-PQ in RAM and as IVF-PQ on disk (`xmodal index build`) with a ridge
aligner fitted on other stamps, and served next to a run folder and a collection of a config."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scale_fixtures import ENCODERS, write_tux_manifest
from serve_fixtures import served_folders

from xmodal.cli import main
from xmodal.data.images import load_rgb
from xmodal.retrieval.sharded_index import ShardedCollection
from xmodal.serve import Encoders, create_app, load_collections
from xmodal.serve.items import ShardedItems
from xmodal.shards import ShardedEmbeddings

pytestmark = pytest.mark.slow  # embeds real stamps with the real encoders

STAMPS, STEP = 60, 15  # served: every 15th stamp, from all the categories
SHARD_SIZE = 10
#: index folder -> --max-index-memory: flat, IVF-PQ in RAM, IVF-PQ with its lists on disk
BUDGETS = {"stamps-flat": "1G", "stamps-pq": "16K", "stamps-disk": "2K"}


def _embed(source: Path, out: Path, shard_size: int) -> Path:
    argv = ["embed", f"manifest:{source}", *ENCODERS, "--out", str(out), "--quiet"]
    assert main([*argv, "--shard-size", str(shard_size)]) == 0
    return out


def _index(emb: Path, aligner: Path, out: Path, budget: str = "1G") -> Path:
    argv = ["index", "build", str(emb), "--aligner", str(aligner), "--out", str(out)]
    assert main([*argv, "--max-index-memory", budget, "--quiet"]) == 0
    return out


def _ridge_on_other_stamps(root: Path) -> Path:
    """A ridge aligner fitted on stamps none of the served ones: the searches are held out."""
    from xmodal.align.registry import build_aligner
    from xmodal.data.loaders import load_dataset
    from xmodal.experiments.pipeline import load_embedded

    ds = load_dataset("tuxpaint")
    caption = {c.image_id: c.text for c in ds.captions}
    served = {im.id for im in ds.images[::STEP][: STAMPS + 1]}
    others = [im for im in ds.images if im.id not in served][::2]
    manifest = root / "train.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "image_id"])
        writer.writerows((str(im.path), caption[im.id], im.id) for im in others)
    whole, _ = load_embedded(_embed(manifest, root / "train-emb", 1000))
    path = root / "ridge.safetensors"
    build_aligner("ridge", metric="cosine").fit(whole.all).save(path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(embedding folder, aligner, {index name: folder}, the served collection in memory)."""
    root = tmp_path_factory.mktemp("serve-shards")
    emb = _embed(write_tux_manifest(root / "stamps", STAMPS, STEP), root / "emb", SHARD_SIZE)
    aligner = _ridge_on_other_stamps(root)
    indexes = {name: _index(emb, aligner, root / name, b) for name, b in BUDGETS.items()}
    return emb, aligner, indexes, ShardedEmbeddings(emb).load()[0]


@pytest.fixture(scope="module")
def loaded(built, tmp_path_factory):
    run, config_index = served_folders(tmp_path_factory)
    _, _, indexes, _ = built
    collections = load_collections([run, *indexes.values(), config_index])
    encoders = Encoders("cpu")
    encoders.load(collections)
    return collections, encoders, run, config_index


@pytest.fixture(scope="module")
def client(loaded):
    collections, encoders, _, _ = loaded
    with TestClient(create_app(collections, encoders)) as c:
        yield c


def _search(client, collection: str, **params) -> list[dict]:
    r = client.get("/api/search", params={"collection": collection, **params})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _row_id(dataset, row: int) -> str:
    return f"{row}:{dataset.images[row].id}"


def test_every_kind_is_served_side_by_side(client, built, loaded):
    emb, _, indexes, dataset = built
    _, _, run, config_index = loaded
    listed = {c["name"]: c for c in client.get("/api/collections").json()}
    assert set(listed) == {run.name, config_index.name, *indexes}
    assert (len(dataset.images), len(dataset.captions)) == (STAMPS, 80)  # every 3rd has 2
    plans = {}
    for name, folder in indexes.items():
        assert (listed[name]["images"], listed[name]["captions"]) == (STAMPS, 80)
        assert listed[name]["aligner"] == "ridge" and listed[name]["metric"] == "cosine"
        plan = json.loads((folder / "collection.json").read_text())["images"]
        plans[name] = (plan["kind"], plan["on_disk"], listed[name]["search"]["images"])
    assert plans == {
        "stamps-flat": ("flat", False, "exact"),
        "stamps-pq": ("ivfpq", False, "ivf"),
        "stamps-disk": ("ivfpq", True, "ivf"),
    }
    assert (indexes["stamps-disk"] / "images" / "lists.ivfdata").is_file()
    assert len(json.loads((emb / "manifest.json").read_text())["shards"]) == 7  # 61 listed


def test_a_caption_finds_its_own_image_and_an_image_its_own_caption(client, built):
    """Held-out retrieval through the API, exact index: each caption's own image in its top 10,
    each uploaded image's own caption in its top 10 captions, for most queries (chance: 1/6)."""
    _, _, _, dataset = built
    ids = {im.id: _row_id(dataset, row) for row, im in enumerate(dataset.images)}
    t2i = [
        ids[c.image_id] in [r["id"] for r in _search(client, "stamps-flat", q=c.text)]
        for c in dataset.captions
    ]
    i2t = []
    for row, im in enumerate(dataset.images):
        files = {"image": (Path(im.path).name, Path(im.path).read_bytes(), "image/png")}
        data = {"collection": "stamps-flat", "target": "text", "k": "10"}
        body = client.post("/api/search", files=files, data=data).json()
        i2t.append(any(r["id"] == ids[im.id] for r in body["results"]))
        if row == 0:
            assert all(r["caption"] in r["captions"] for r in body["results"])
    print(f"own item in the top 10: text->image {np.mean(t2i):.2f}, image->text {np.mean(i2t):.2f}")
    assert np.mean(t2i) > 0.5 and np.mean(i2t) > 0.5


@pytest.mark.parametrize("name", list(BUDGETS))
def test_hits_equal_the_library_and_name_the_embedded_items(client, built, name):
    """Every index kind answers a caption and an uploaded image as `xmodal search` does on it;
    ids, captions and thumbnails are those of the embedding folder's metadata."""
    _, _, indexes, dataset = built
    library = ShardedCollection(indexes[name])
    row_of = {im.id: row for row, im in enumerate(dataset.images)}
    captions_of: dict[str, list[str]] = {}
    for c in dataset.captions:
        captions_of.setdefault(c.image_id, []).append(c.text)
    want = library.search_text("a bird with a long neck", k=8)
    got = _search(client, name, q="a bird with a long neck", k=8)
    assert [r["id"] for r in got] == [f"{row_of[h.image_id]}:{h.image_id}" for h in want]
    np.testing.assert_allclose([r["score"] for r in got], [h.score for h in want], atol=1e-4)
    for r, hit in zip(got, want, strict=True):
        assert r["captions"] == captions_of[hit.image_id] and r["caption"] is None
    for r in got[:2]:
        _assert_thumbnail_of(client, r, dataset.images[row_of[r["id"].split(":", 1)[1]]].path)

    picture = Path(dataset.images[5].path)
    want = library.search_image(picture, k=5)
    files = {"image": (picture.name, picture.read_bytes(), "image/png")}
    data = {"collection": name, "target": "text", "k": "5"}
    got = client.post("/api/search", files=files, data=data).json()["results"]
    assert [(r["id"], r["caption"]) for r in got] == [
        (f"{row_of[h.image_id]}:{h.image_id}", h.caption) for h in want
    ]
    np.testing.assert_allclose([r["score"] for r in got], [h.score for h in want], atol=1e-4)
    assert all(r["caption"] in r["captions"] for r in got)


def _assert_thumbnail_of(client, result: dict, path: Path) -> None:
    got = client.get(result["image_url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(got.content)) as im:
        thumb = np.asarray(im.convert("RGB"), np.float32)
    original = load_rgb(path)
    original.thumbnail((256, 256))
    assert thumb.shape == np.asarray(original).shape
    assert np.abs(thumb - np.asarray(original, np.float32)).mean() < 8  # JPEG, same picture


@pytest.mark.parametrize("name", list(BUDGETS))
def test_more_like_this_uses_the_exact_vector_on_every_kind(client, built, loaded, name):
    """ "More like this" queries with the item's exact aligned vector whatever the index stores
    (IVF-PQ codes decode to an approximation); its neighbours come from the index searched."""
    _, _, _, dataset = built
    collections = loaded[0]
    exact = collections["stamps-flat"].images.vectors_
    row = 17
    np.testing.assert_allclose(collections[name].image_vector(row), exact[row : row + 1], atol=1e-5)
    item = _row_id(dataset, row)
    got = _search(client, name, like=item, k=6)
    assert len(got) == 6 and item not in [r["id"] for r in got]
    query = collections[name].image_vector(row)
    scores, rows = collections[name].images.search(query, 7)
    assert [r["id"] for r in got] == [_row_id(dataset, r) for r in rows[0] if r != row][:6]
    texts = _search(client, name, like=item, k=4, target="text")
    assert len(texts) == 4 and all(r["caption"] for r in texts)


def test_items_by_id_and_ids_that_name_nothing(client, built):
    _, _, _, dataset = built
    texts = [[c.text for c in dataset.captions if c.image_id == im.id] for im in dataset.images]
    two = next(r for r in range(1, STAMPS) if len(texts[r]) == 2)
    item = _row_id(dataset, two)
    body = client.get(f"/api/items/{item}", params={"collection": "stamps-disk"}).json()
    assert body["id"] == item and body["captions"] == texts[two]
    _assert_thumbnail_of(client, body, dataset.images[two].path)
    other = dataset.images[two + 1].id
    for bad in (
        f"{two}:{other}",  # a row and the id of another image: a stale link
        f"0{item}",  # not the row's own spelling
        f"{STAMPS}:{dataset.images[0].id}",  # past the last row
        dataset.images[two].id,  # an image id without its row
        "..%2F..%2Fetc%2Fpasswd",
    ):
        r = client.get(f"/api/items/{bad}/image", params={"collection": "stamps-disk"})
        assert r.status_code == 404 and r.json()["detail"].startswith("no item "), bad
        r = client.get("/api/search", params={"like": bad, "collection": "stamps-disk"})
        assert r.status_code == 404, bad


def test_the_shard_cache_is_bounded_and_reads_only_the_shards_asked(built):
    emb, _, _, dataset = built
    items = ShardedItems(ShardedEmbeddings(emb))
    starts = items.shards.starts("images")
    assert [im.id for im in items.images([starts[3], 0])] == [
        _row_id(dataset, starts[3]),
        _row_id(dataset, 0),
    ]
    assert items.cached_shards() == [3, 0]
    tiny = ShardedItems(ShardedEmbeddings(emb), cache_bytes=1)
    assert [im.id for im in tiny.images(range(STAMPS))] == [
        _row_id(dataset, r) for r in range(STAMPS)
    ]
    assert tiny.cached_shards() == [6]  # the last read; never more than one over the budget
    text, image = tiny.captions([len(dataset.captions) - 1])[0]
    assert (text, dataset.images[image].id) == (
        dataset.captions[-1].text,
        dataset.captions[-1].image_id,
    )


def test_a_damaged_shard_fails_only_the_requests_that_read_it(built, loaded, tmp_path):
    """Serving opens no shard's metadata; a query reads those of its hits only; an item of a
    damaged shard is a 409 naming the file, and the service answers on."""
    emb, aligner, _, dataset = built
    _, encoders, _, _ = loaded
    copy = tmp_path / "emb"
    shutil.copytree(emb, copy)
    index = _index(copy, aligner, tmp_path / "index")
    query = dataset.captions[0].text
    want = [h.image_id for h in ShardedCollection(index).search_text(query, k=3)]
    rows = [next(r for r, im in enumerate(dataset.images) if im.id == i) for i in want]
    starts = ShardedEmbeddings(copy).starts("images")
    hit_shards = {int(np.searchsorted(starts, r, side="right") - 1) for r in rows}
    damaged = max(set(range(len(starts) - 1)) - hit_shards)
    metadata = copy / "metadata" / f"metadata_{damaged:05d}.parquet"
    metadata.write_bytes(b"not parquet")

    collections = load_collections([index])
    with TestClient(create_app(collections, encoders)) as client:
        got = _search(client, "index", q=query, k=3)
        assert [r["id"].split(":", 1)[1] for r in got] == want
        items = collections["index"].items
        assert isinstance(items, ShardedItems) and set(items.cached_shards()) == hit_shards
        item = _row_id(dataset, starts[damaged])
        for path, params in (
            (f"/api/items/{item}", {}),
            (f"/api/items/{item}/image", {}),
            ("/api/search", {"like": item}),
            ("/api/search", {"q": query, "k": STAMPS}),  # every image: the damaged shard's too
        ):
            r = client.get(path, params=params)
            assert r.status_code == 409, (path, r.text)
            detail = r.json()["detail"]
            assert f"metadata/{metadata.name}: checksum mismatch" in detail
            assert str(tmp_path) not in detail  # the server's paths stay on the server
        assert [r["id"] for r in _search(client, "index", q=query, k=3)] == [r["id"] for r in got]


def test_folders_that_cannot_be_served_are_refused_at_start(built, tmp_path, capsys):
    emb, aligner, _, _ = built
    with pytest.raises(ValueError, match="an embedding folder .*xmodal index build"):
        load_collections([emb])
    with pytest.raises(ValueError, match="neither a run folder .* nor an index"):
        load_collections([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_collections([tmp_path / "nowhere"])
    source = tmp_path / "emb"
    shutil.copytree(emb, source)
    index = _index(source, aligner, tmp_path / "index")
    shutil.move(source, tmp_path / "moved")
    assert main(["serve", str(index)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmodal: error: ") and "Traceback" not in err
    assert f"{source}: the embedding folder this index was built from" in err


def test_the_command_serves_an_index_of_shards_next_to_a_run(built, loaded, tmp_path):
    """A real `xmodal serve` process, started elsewhere, over the on-disk index and a run."""
    _, _, indexes, dataset = built
    _, _, run, _ = loaded
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "xmodal.cli", "serve", str(indexes["stamps-disk"]), str(run)]
    proc = subprocess.Popen(
        [*cmd, "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, url = [], ""
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if "ready at " in line:
                url = line.split("ready at ", 1)[1].strip()
                break
        assert url, "".join(log)
        assert any(ln.startswith("stamps-disk: 60 images, 80 captions, ridge") for ln in log), log
        query = "api/search?collection=stamps-disk&k=3&q=a+penguin"
        with urllib.request.urlopen(url + query, timeout=120) as answer:
            results = json.loads(answer.read())["results"]
        ids = {_row_id(dataset, r) for r in range(STAMPS)}
        assert len(results) == 3 and all(r["id"] in ids for r in results)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
