"""The search service's API over a real run folder and a real index (Tux Paint stamps, the real
encoders): every endpoint, every refused request, and answers checked against the library."""

from __future__ import annotations

import asyncio
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_fixtures import served_folders

from xmodal.retrieval.collection import Collection
from xmodal.serve import Encoders, create_app, load_collections
from xmodal.serve.batching import MicroBatcher
from xmodal.serve.collections import _learned, _unique_ids
from xmodal.similarity import topk

pytestmark = pytest.mark.slow  # embeds real stamps with the real encoders once per session


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    run, index = served_folders(tmp_path_factory)
    collections = load_collections([run, index])
    encoders = Encoders("cpu")
    encoders.load(collections)
    return run, index, collections, encoders


@pytest.fixture(scope="module")
def client(loaded):
    _, _, collections, encoders = loaded
    with TestClient(create_app(collections, encoders)) as c:
        yield c


@pytest.fixture(scope="module")
def names(loaded):
    run, index, collections, _ = loaded
    return run.name, index.name


def test_health_and_collections(client, loaded, names):
    assert client.get("/healthz").json() == {"status": "ok"}
    listed = {c["name"]: c for c in client.get("/api/collections").json()}
    assert set(listed) == set(names)
    run = json.loads((loaded[0] / "results.json").read_text())
    test_images = run["runs"][0]["test_images"]
    assert listed[names[0]]["images"] == listed[names[0]]["captions"] == test_images
    assert listed[names[1]]["images"] == 64  # the index holds the whole dataset
    for c in listed.values():
        assert (c["image_encoder"], c["text_encoder"], c["metric"]) == (
            "effnet-lite0",
            "minilm",
            "cosine",
        )
        assert c["search"] == {"images": "exact", "captions": "exact"}  # small: exact


def test_run_folder_serves_the_aligner_validation_selects(loaded, names):
    run, _, collections, _ = loaded
    rows = json.loads((run / "results.json").read_text())["runs"]
    best = max(rows, key=lambda r: r["val_rsum"])
    assert collections[names[0]].aligner_name.startswith(best["aligner"] + " ")
    other = next(r for r in rows if r is not best)
    named = load_collections([run], aligner=other["aligner"])[run.name]
    assert named.aligner_name.startswith(other["aligner"] + " ")
    by_file = load_collections([run], aligner=Path(other["model"]).stem)[run.name]
    assert by_file.aligner_name == named.aligner_name
    with pytest.raises(ValueError, match="no aligner or model named 'nope'"):
        load_collections([run], aligner="nope")
    assert _learned("bilinear") and _learned("ensemble") and not _learned("ridge")


def test_text_search_matches_the_library(client, loaded, names):
    _, index, _, _ = loaded
    expected = Collection(index).search_text("a red apple", k=7)
    body = client.get(
        "/api/search", params={"q": "a red apple", "k": 7, "collection": names[1]}
    ).json()
    assert body["query"] == {"text": "a red apple"} and body["target"] == "image"
    got = body["results"]
    assert [r["rank"] for r in got] == list(range(1, 8))
    assert [r["id"] for r in got] == [h.image_id for h in expected]
    np.testing.assert_allclose([r["score"] for r in got], [h.score for h in expected], atol=1e-5)
    for r in got:
        assert r["captions"] and r["caption"] is None


def test_run_collection_search_is_exact_over_its_test_split(client, loaded, names):
    _, _, collections, encoders = loaded
    c = collections[names[0]]
    body = client.get("/api/search", params={"q": "a cat", "k": 5}).json()  # default collection
    assert body["collection"] == names[0]
    query = c.aligner.transform_texts(encoders.text("minilm").encode_texts(["a cat"]))
    scores, rows = topk(query, c.images.vectors_, 5, c.aligner.metric)
    assert [r["id"] for r in body["results"]] == [c.items.image_ids[i] for i in rows[0]]
    np.testing.assert_allclose([r["score"] for r in body["results"]], scores[0], atol=1e-5)


def test_captions_and_thumbnails(client, names):
    body = client.get(
        "/api/search", params={"q": "a fish", "k": 4, "target": "text", "collection": names[1]}
    ).json()
    assert len(body["results"]) == 4
    for r in body["results"]:
        assert r["caption"] in r["captions"]
        thumb = client.get(r["image_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumb.content)) as im:
            assert max(im.size) <= 256 and im.format == "JPEG"


def test_item_and_its_image(client, loaded, names):
    c = loaded[2][names[1]]
    item_id = c.items.image_ids[3]
    body = client.get(f"/api/items/{item_id}", params={"collection": names[1]}).json()
    assert body["id"] == item_id and body["captions"] == [c.items.caption_texts[3]]
    assert client.get(body["image_url"]).content[:2] == b"\xff\xd8"  # JPEG


def test_more_like_an_item(client, loaded, names):
    c = loaded[2][names[1]]
    item_id = c.items.image_ids[0]
    body = client.get(
        "/api/search", params={"like": item_id, "k": 5, "collection": names[1]}
    ).json()
    ids = [r["id"] for r in body["results"]]
    assert len(ids) == 5 and item_id not in ids and body["query"] == {"like": item_id}
    scores, rows = topk(c.images.vectors_[:1], c.images.vectors_, 6, c.aligner.metric)
    assert ids == [c.items.image_ids[i] for i in rows[0] if i != 0][:5]
    texts = client.get(
        "/api/search", params={"like": item_id, "target": "text", "collection": names[1]}
    ).json()["results"]
    assert texts and all(r["caption"] for r in texts)


def test_upload_finds_the_same_image_first(client, loaded, names):
    c = loaded[2][names[1]]
    path = Path(c.items.image_paths[5])
    files = {"image": (path.name, path.read_bytes(), "image/png")}
    data = {"k": "3", "collection": names[1], "target": "image"}
    body = client.post("/api/search", files=files, data=data).json()
    assert body["results"][0]["id"] == c.items.image_ids[5]
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # cosine with itself
    assert body["query"] == {"image": path.name}
    data["target"] = "text"
    body = client.post("/api/search", files=files, data=data).json()
    assert len(body["results"]) == 3 and all(r["caption"] for r in body["results"])


def _png(size: tuple[int, int], mode: str = "1") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": "x", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"q": "x", "k": 1001}, 422, "k: Input should be less than or equal to 1000"),
        ({"q": "x", "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({"q": ""}, 400, "empty query"),
        ({"q": "   "}, 400, "empty query"),
        ({"q": "x" * 2001}, 422, "q: String should have at most 2000 characters"),
        ({}, 400, "give one of q"),
        ({"q": "x", "like": "y"}, 400, "give one of q"),
        ({"q": "x", "collection": "nope"}, 404, "unknown collection 'nope'"),
        ({"like": "no/such/stamp"}, 404, "no item 'no/such/stamp'"),
        ({"q": "x", "target": "video"}, 422, "target: Input should be 'image' or 'text'"),
    ],
)
def test_bad_searches_get_a_json_message(client, params, status, message):
    r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"] and "Traceback" not in r.text


def test_a_query_of_2000_characters_is_served(client):
    assert client.get("/api/search", params={"q": "apple " * 333 + "ap", "k": 1}).status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"", 400, "empty upload"),
        (b"this is not an image", 400, "upload: not a readable image"),
        (_png((8001, 8001)), 400, "exceeds the limit of 64000000"),  # small file, huge canvas
        (b"\0" * (10 * 2**20 + 1), 413, "upload over 10 MB"),
        (b"\0" * (11 * 2**20), 413, "over the 10 MB upload limit"),  # refused before it is read
    ],
)
def test_bad_uploads_get_a_json_message(client, content, status, message):
    r = client.post("/api/search", files={"image": ("x.png", content, "image/png")})
    assert r.status_code == status, r.text[:300]
    assert message in r.json()["detail"] and "/tmp" not in r.text


def test_upload_needs_a_known_collection_and_k_in_range(client):
    png = {"image": ("x.png", _png((32, 32), "RGB"), "image/png")}
    assert client.post("/api/search", files=png, data={"collection": "nope"}).status_code == 404
    assert client.post("/api/search", files=png, data={"k": "1001"}).status_code == 422
    assert client.post("/api/search", data={"k": "3"}).status_code == 422  # no image


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/no/such/stamp",
        "/api/items/no/such/stamp/image",
        "/api/items/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/items/%2Fetc%2Fpasswd/image",
    ],
)
def test_unknown_ids_never_reach_the_file_system(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.json()["detail"].startswith("no item ")


def test_unreadable_image_file_is_a_404_not_a_crash(loaded, names, tmp_path):
    _, _, collections, encoders = loaded
    c = collections[names[0]]
    kept = c.items.image_paths[1]
    c.items.image_paths[1] = str(tmp_path / "gone.png")
    try:
        with TestClient(create_app(collections, encoders)) as client:
            r = client.get(
                f"/api/items/{c.items.image_ids[1]}/image", params={"collection": names[0]}
            )
        assert r.status_code == 404 and "cannot be read" in r.json()["detail"]
    finally:
        c.items.image_paths[1] = kept


def test_cors_is_off_unless_an_origin_is_named(client, loaded):
    headers = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=headers).headers
    _, _, collections, encoders = loaded
    app = create_app(collections, encoders, allow_origins=["https://elsewhere.example"])
    with TestClient(app) as other:
        got = other.get("/healthz", headers=headers).headers
        assert got["access-control-allow-origin"] == "https://elsewhere.example"
        bad = other.get("/healthz", headers={"Origin": "https://evil.example"}).headers
        assert "access-control-allow-origin" not in bad


def test_page_and_docs_load_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http" not in page.text.replace('href="/docs"', "")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text.replace(
        "https://fastapi.tiangolo.com", ""
    )
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/healthz", "/api/collections", "/api/search", "/api/items/{item_id}"} <= set(
        spec["paths"]
    )
    assert set(spec["paths"]["/api/search"]) == {"get", "post"}


def test_concurrent_requests_get_their_own_answers(client, names):
    queries = ["a cat", "a red apple", "a fish", "a house", "a tree", "a car", "a dog", "a boat"]

    def ask(q):
        return client.get("/api/search", params={"q": q, "k": 3, "collection": names[1]}).json()

    serial = [ask(q) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask, queries * 2))
    for got, want in zip(concurrent, serial * 2, strict=True):
        assert got["query"] == want["query"]
        assert [r["id"] for r in got["results"]] == [r["id"] for r in want["results"]]
        # a query padded within a batch embeds equal up to float rounding
        np.testing.assert_allclose(
            [r["score"] for r in got["results"]], [r["score"] for r in want["results"]], atol=1e-4
        )


def test_micro_batcher_batches_and_survives_errors():
    sizes = []

    def double(items):
        sizes.append(len(items))
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [2 * i for i in items]

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            b = MicroBatcher(double, pool, max_batch=8, max_wait_s=0.05)
            await b.start()
            got = await asyncio.gather(*(b.submit(i) for i in range(20)))
            with pytest.raises(ValueError, match="negative"):
                await asyncio.gather(b.submit(-1), b.submit(5))
            after = await b.submit(21)
            await b.stop()
            return got, after

    got, after = asyncio.run(scenario())
    assert got == [2 * i for i in range(20)] and after == 42
    assert max(sizes) == 8 and len(sizes) <= 6  # 20 requests in 3 batches, then 2 + 1


def test_ids_from_paths_are_short_and_unique():
    paths = ["/d/a/owl.png", "/d/b/owl.png", "/d/b/cat.png", "/d/c/orange.png", "/d/b/cat.png"]
    assert _unique_ids(paths) == ["a/owl", "b/owl", "cat", "orange", "cat#2"]
