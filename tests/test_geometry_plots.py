import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.data.images import ImageError
from xmodal.geometry import pair_distances
from xmodal.geometry import plots as p

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check(paths: list[Path], svg: bool = True) -> None:
    """A PNG, and an SVG beside it for charts (retrieval examples are photographs: PNG only)."""
    png = paths[0]
    assert png.suffix == ".png" and png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2000
    assert len(paths) == 1 + svg and png.with_suffix(".svg").exists() == svg
    if svg:
        assert paths[1] == png.with_suffix(".svg")
        head = paths[1].read_text()[:2000]
        assert "<svg" in head and paths[1].stat().st_size > 2000


def _data(d_text=6):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 6))
    ci = np.repeat(np.arange(40), 2)
    texts = images[ci] @ rng.normal(size=(6, d_text)) + 0.2 * rng.normal(size=(80, d_text))
    return images, texts, ci


@pytest.mark.parametrize("d_text", [6, 4])
def test_projection_joint_and_separate(tmp_path, d_text):
    images, texts, ci = _data(d_text)
    _check(p.plot_projection(images, texts, ci, tmp_path / "proj.png", max_pairs=25, title="t"))


def test_pca_2d_is_scikit_learns_exact_pca_with_fixed_signs():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    for shape in [(190, 1280), (300, 384), (40, 3)]:
        z = rng.normal(size=shape) * np.linspace(3, 0.1, shape[1])
        got = p.pca_2d(z)
        want = PCA(2, svd_solver="full").fit_transform(z)
        np.testing.assert_allclose(got, want, atol=1e-9)
        # the axes' directions come from the loadings, not from the SVD's arbitrary signs: a
        # mirrored cloud is drawn mirrored
        np.testing.assert_allclose(p.pca_2d(-z), -got, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 rows and 2 columns"):
        p.pca_2d(np.ones((5, 1)))


def test_projection_rejects_unknown_method(tmp_path):
    images, texts, ci = _data()
    with pytest.raises(ValueError, match="unknown projection"):
        p.plot_projection(images, texts, ci, tmp_path / "x", method="tsne")


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap is installed")
def test_umap_without_the_package_says_what_to_install(tmp_path):
    images, texts, ci = _data()
    with pytest.raises(ImportError, match="umap-learn"):
        p.plot_projection(images, texts, ci, tmp_path / "u", method="umap")


def test_distance_histograms(tmp_path):
    images, texts, ci = _data()
    matched, random = pair_distances(images, texts, ci, "euclidean")
    _check(
        p.plot_distance_histograms(matched, random, tmp_path / "sub" / "hist", metric="euclidean")
    )


def test_measures_vs_recall(tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        {"name": f"c{i}", "gap": rng.random(), "cka": rng.random(), "t2i_R@1": rng.random()}
        for i in range(6)
    ]
    rows[0]["gap"] = float("nan")
    q = {"gap": 0.04, "cka": 0.5}
    _check(
        p.plot_measures_vs_recall(
            rows, ["gap", "cka"], "t2i_R@1", tmp_path / "s", q_values=q, label_key="name"
        )
    )
    with pytest.raises(KeyError, match="cka"):  # a panel without its adjusted q is refused
        p.plot_measures_vs_recall(
            rows, ["gap", "cka"], "t2i_R@1", tmp_path / "t", q_values={"gap": 0.1}
        )


def test_scatter_titles_give_the_adjusted_q_not_p():
    assert p.panel_title(0.812, 0.0312, 6) == "Spearman \u03c1 = 0.81 (q = 0.031, n = 6)"
    assert p.panel_title(float("nan"), float("nan"), 2) == "Spearman \u03c1 not computable (n = 2)"


def test_scatter_ticks_are_few_distinct_plain_numbers():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for lo, span in ((0.123456, 4e-6), (1234567.0, 5e5), (0.0, 1.0)):
        fig = Figure(figsize=(4.5, 3.8))
        ax = fig.add_subplot()
        ax.scatter(np.linspace(lo, lo + span, 7), np.linspace(0, 300, 7))
        p._readable_ticks(ax)
        FigureCanvasAgg(fig).draw()
        left, right = ax.get_xlim()
        shown = [t for t in ax.get_xticklabels() if left <= t.get_position()[0] <= right]
        labels = [t.get_text() for t in shown]
        assert 2 <= len(labels) <= 5 and len(set(labels)) == len(labels), labels
        assert ax.xaxis.get_offset_text().get_text() in ("", *[f"1e{e}" for e in range(-9, 9)])
        boxes = [t.get_window_extent() for t in shown]
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), labels


def _images(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = tmp_path / f"im{i}.png"
        Image.new("RGBA", (50 + 10 * i, 40), (40 * i % 255, 100, 200, 180)).save(path)
        paths.append(path)
    return paths


def test_caption_query_examples(tmp_path):
    paths = _images(tmp_path, 6)
    topk = np.array([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1]])
    out = p.plot_caption_queries(
        ["a red square", "a long caption " * 5], paths, topk, [2, 0], tmp_path / "t2i"
    )
    _check(out, svg=False)
    with pytest.raises(ValueError, match="outside image_paths"):
        p.plot_caption_queries(["q"], paths, np.array([[9]]), [0], tmp_path / "bad")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.png"):
        p.plot_caption_queries(
            ["q"], [tmp_path / "broken.png"], np.array([[0]]), [0], tmp_path / "b"
        )


def test_image_query_examples(tmp_path):
    paths = _images(tmp_path, 2)
    captions = [f"caption number {i} " + "word " * i for i in range(8)]
    topk = np.array([[0, 1, 2, 3, 4], [7, 6, 5, 4, 3]])
    _check(
        p.plot_image_queries(paths, captions, topk, [{0, 1}, {2}], tmp_path / "i2t.svg"), svg=False
    )
    with pytest.raises(ValueError, match="one truth per query"):
        p.plot_image_queries(paths, captions, topk, [{0}], tmp_path / "bad")
