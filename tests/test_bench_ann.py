"""The ANN benchmark's own parts: its distractors, its query split, its goal and its index cache."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_ann  # noqa: E402


def anisotropic(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Vectors whose spread falls off along the axes, as real embeddings' does."""
    scales = np.geomspace(4.0, 0.1, dim).astype(np.float32)
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32) * scales


def test_distractors_keep_the_real_vectors_shape():
    real = anisotropic(500)
    fake = bench_ann.distractors(real, 20_000, seed=1)
    assert fake.shape == (20_000, 16) and fake.dtype == np.float32 and np.isfinite(fake).all()
    spread = np.sqrt(np.linalg.eigvalsh(np.cov(fake, rowvar=False)))[::-1]
    real_spread = np.sqrt(np.linalg.eigvalsh(np.cov(real, rowvar=False)))[::-1]
    # anisotropic like the real vectors (isotropic noise would give a ratio near 1)
    assert spread[0] / spread[-1] > 10
    assert np.allclose(spread / spread[0], real_spread / real_spread[0], atol=0.1)
    # near the real vectors but none of them copied
    gaps = np.linalg.norm(fake[:2000, None, :] - real[None], axis=2).min(1)
    assert gaps.min() > 1e-3
    again = bench_ann.distractors(real, 20_000, seed=1)
    assert np.array_equal(fake, again)


def test_halves_split_every_query_once():
    tune, test = bench_ann.halves(951)
    assert len(tune) == 475 and len(test) == 476
    assert np.array_equal(np.sort(np.concatenate([tune, test])), np.arange(951))
    assert np.array_equal(bench_ann.halves(951)[0], tune)


def row(label: str, tune: float, test: float, speedup: float) -> dict:
    return {
        "case": "c",
        "index": label,
        "search": "s",
        "recall@10 tune": tune,
        "speedup tune": speedup,
        "recall@10 test": test,
        "queries/s test": 100 * speedup,
        "speedup test": speedup,
    }


def test_goal_chooses_on_the_tune_queries_and_reports_the_test_ones():
    exact = row("flat", 1.0, 1.0, 1.0)
    lucky = row("a", 0.94, 0.99, 50.0)  # the test queries would flatter it: not chosen
    chosen = row("b", 0.96, 0.93, 12.0)
    goal = bench_ann.goal([exact, lucky, chosen])
    assert goal["measured"].startswith("b s (chosen on tune queries): test recall 0.930")
    assert goal["ratio"] == 12.0 and goal["met"] == "no"  # test recall below the goal
    assert bench_ann.goal([exact, row("b", 0.96, 0.97, 12.0)])["met"] == "yes"
    none = bench_ann.goal([exact, lucky])
    assert none["met"] == "no" and none["ratio"] == 0.0 and "no setting" in none["measured"]


def test_a_cached_index_is_reused_only_for_the_same_gallery_and_params(tmp_path):
    gallery = bench_ann.l2_normalize(anisotropic(2000))
    params = {"M": 8, "ef_construction": 20}
    built, build_s, size = bench_ann.built_index("hnsw", params, gallery, tmp_path)
    loaded, again_s, again_size = bench_ann.built_index("hnsw", params, gallery, tmp_path)
    assert (again_s, again_size) == (build_s, size) and size > 0
    q = gallery[:50]
    assert np.array_equal(built.search(q, 10)[1], loaded.search(q, 10)[1])
    bench_ann.built_index("hnsw", params | {"M": 16}, gallery, tmp_path)
    bench_ann.built_index("hnsw", params, gallery[::-1].copy(), tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3


def test_index_configs_train_every_ivf_cell_and_sweep_pq_refine_only_where_pq_trains():
    small = bench_ann.index_configs(950, 128)
    assert [kind for kind, _, _ in small] == ["hnsw", "ivf"]  # too few vectors for PQ
    assert small[1][1]["nlist"] * bench_ann.TRAIN_PER_CELL <= 950
    _, pq, settings = bench_ann.index_configs(1_000_000, 128)[2]
    assert pq["nlist"] == 1024 and pq["pq_m"] == 16
    assert sorted({s["refine"] for s in settings}) == [10, 30, 100, 300]
