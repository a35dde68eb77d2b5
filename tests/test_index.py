"""Search indexes: exact flat search for every metric, FAISS ones for cosine/Euclidean."""

import numpy as np
import pytest

from xmodal.retrieval.index import build_index, load_index
from xmodal.similarity import Metric, reference_scores, topk


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 3
    return (centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(3000)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(100, seed=1)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)])


@pytest.mark.parametrize("metric", list(Metric))
def test_flat_index_is_exact_and_maps_ids(vectors, queries, metric):
    index = build_index("flat", dim=32, metric=metric, block_size=10_000)
    ids = np.arange(len(vectors)) * 10 + 7
    index.add(vectors[:1000], ids[:1000])
    index.add(vectors[1000:], ids[1000:])
    scores, found = index.search(queries[:10], 5)
    want_scores, want = topk(queries[:10], vectors, 5, metric)
    np.testing.assert_array_equal(found, ids[want])
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)  # blocks change the last bit


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_hnsw_recall_and_score_convention(vectors, queries, metric):
    index = build_index("hnsw", dim=32, metric=metric, M=32, ef_search=128)
    index.add(vectors)
    scores, found = index.search(queries, 10)
    _, exact = topk(queries, vectors, 10, metric)
    assert recall(found, exact) >= 0.95
    ref = reference_scores(queries, vectors, metric)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, found, 1), rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


@pytest.mark.parametrize(("pq_m", "least"), [(0, 0.99), (16, 0.6)])  # PQ is lossy by design
def test_ivf_probing_every_list(vectors, queries, pq_m, least):
    params = {"nlist": 16, "nprobe": 16, "pq_m": pq_m, "pq_bits": 6}
    index = build_index("ivf", dim=32, metric="euclidean", **params)
    index.add(vectors)
    _, found = index.search(queries, 10)
    _, exact = topk(queries, vectors, 10, "euclidean")
    assert recall(found, exact) >= least


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("flat", {"metric": "chi_square"}),
        ("hnsw", {"M": 8}),
        ("ivf", {"nlist": 8, "pq_m": 4, "pq_bits": 4}),
    ],
)
def test_save_load_round_trip(tmp_path, vectors, queries, kind, params):
    index = build_index(kind, dim=32, **params)
    index.add(vectors, np.arange(len(vectors)) + 100)
    index.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    assert (again.kind, again.metric, len(again)) == (index.kind, index.metric, len(index))
    assert again.get_params() == index.get_params()
    for a, b in zip(again.search(queries, 5), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "idx").glob("*.pkl"))


def test_k_larger_than_index(vectors):
    index = build_index("hnsw", dim=32)
    index.add(vectors[:3])
    scores, found = index.search(vectors[:2], 10)
    assert found.shape == (2, 3) and sorted(found[0]) == [0, 1, 2]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_index("hnsw", dim=32, metric="manhattan"), "supports metrics cosine, eucl"),
        (
            lambda: build_index("ivf", dim=32, metric="chi_square"),
            "'flat' index supports every metric",
        ),
        (lambda: build_index("annoy", dim=32), "choose one of flat, hnsw, ivf"),
        (lambda: build_index("hnsw", dim=32, ef=5), "no parameter ef; it takes M, ef_constr"),
        (lambda: build_index("flat", dim=0), "dim must be a positive integer"),
        (lambda: build_index("ivf", dim=30, pq_m=8), "pq_m=8 must divide dim=30"),
        (lambda: build_index("ivf", dim=4, nlist=64).add(np.ones((10, 4))), "at least nlist=64"),
        (lambda: build_index("flat", dim=4).add(np.ones((10, 5))), r"shape \(n, 4\)"),
        (lambda: build_index("flat", dim=4).add(np.ones((2, 4)), [1]), r"ids must have shape"),
        (lambda: build_index("flat", dim=4).search(np.ones((1, 4)), 1), "empty index"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_load_rejects_a_directory_without_header(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json not found"):
        load_index(tmp_path)
