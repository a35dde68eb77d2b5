"""Pictures of the modality gap and of retrieval: charts written as PNG and SVG side by side,
the retrieval examples (photographs: an SVG would only wrap the same pixels, at twice the cost)
as PNG only.

Figures are built with matplotlib's object API (no pyplot state, rendered by Agg), so plotting
works headless and from threads. Every function takes an output path (with or without a .png /
.svg suffix) and returns the paths written: [png_path, svg_path], or [png_path].
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from xmodal.data.images import load_rgb
from xmodal.geometry.correlation import measure_target_pairs, rank_correlations
from xmodal.geometry.measures import first_caption_pairs, separation_auc, subsample
from xmodal.similarity import l2_normalize

IMAGE_COLOR, TEXT_COLOR = "tab:blue", "tab:orange"
CORRECT, WRONG = "#1a9641", "#bbbbbb"
CHECK = "\u2713 "


def save_figure(fig: Figure, path: str | Path, svg: bool = True) -> list[Path]:
    """Write `fig` as path.png and, with `svg`, path.svg (parents created); returns the paths."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".svg") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.parent / f"{stem.name}.{kind}" for kind in ("png", "svg")[: 1 + svg]]
    fig.savefig(out[0], dpi=150, bbox_inches="tight")
    if svg:
        fig.savefig(out[1], bbox_inches="tight")
    return out


def project_2d(z: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of z by exact PCA (`pca_2d`), or by UMAP (seeded) when the
    umap package is installed."""
    z = np.asarray(z, np.float64)
    if method == "pca":
        return pca_2d(z)
    if method == "umap":
        try:
            import umap  # optional: not a dependency of xmodal
        except ImportError:
            raise ImportError(
                "method='umap' needs the umap-learn package (pip install umap-learn)"
            ) from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
    raise ValueError(f"unknown projection {method!r}; expected 'pca' or 'umap'")


def pca_2d(z: np.ndarray) -> np.ndarray:
    """The rows of z on their first two principal axes, by an exact SVD: what scikit-learn's
    PCA(2, svd_solver="full") gives, without importing it. Each axis points where its largest
    loading is positive, so the picture is the same on every run."""
    from threadpoolctl import threadpool_limits

    if z.ndim != 2 or min(z.shape) < 2:
        raise ValueError(f"a 2-D PCA needs at least 2 rows and 2 columns, got shape {z.shape}")
    # one thread: a plot's few hundred rows gain nothing from more, and on a busy CPU the
    # threads of a multi-threaded BLAS wait on each other (measured: 0.07 s vs 5-9 s)
    with threadpool_limits(1, user_api="blas"):
        u, s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    signs = np.sign(vt[[0, 1], np.abs(vt[:2]).argmax(axis=1)])
    return u[:, :2] * (s[:2] * signs)


def plot_projection(
    images: np.ndarray,
    texts: np.ndarray,
    caption_image: np.ndarray,
    path: str | Path,
    *,
    method: str = "pca",
    normalize: bool = True,
    max_pairs: int = 300,
    seed: int = 0,
    title: str | None = None,
) -> list[Path]:
    """Both modalities in 2-D with matched pairs (one caption per image, at most `max_pairs`,
    seeded) linked by thin lines. One joint projection when the dimensions agree; otherwise
    each modality is projected on its own (two panels) and both panels colour each pair by the
    image's first coordinate, so shared structure shows as a shared colour gradient."""
    x, y = np.asarray(images, np.float64), np.asarray(texts, np.float64)
    if normalize:
        x, y = l2_normalize(x), l2_normalize(y)
    px, py = first_caption_pairs(x, y, np.asarray(caption_image))
    rows = subsample(np.arange(len(px)), max_pairs, seed)
    px, py = px[rows], py[rows]
    label = method.upper()
    if x.shape[1] == y.shape[1]:
        fig = _joint_projection(px, py, method, seed)
        head = f"joint {label} of both modalities ({len(px)} pairs)"
    else:
        fig = _separate_projections(px, py, method, seed)
        head = f"separate {label} per modality ({x.shape[1]}-d images, {y.shape[1]}-d texts)"
    fig.suptitle(f"{title}\n{head}" if title else head)
    return save_figure(fig, path)


def _joint_projection(px: np.ndarray, py: np.ndarray, method: str, seed: int) -> Figure:
    z = project_2d(np.r_[px, py], method, seed)
    zx, zy = z[: len(px)], z[len(px) :]
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    # one collection of pair lines, not one artist per pair: the same picture, drawn faster
    ax.add_collection(
        LineCollection(np.stack([zx, zy], axis=1), colors="0.6", lw=0.4, alpha=0.6, zorder=1)
    )
    ax.scatter(*zx.T, s=10, color=IMAGE_COLOR, label="images", zorder=2)
    ax.scatter(*zy.T, s=10, color=TEXT_COLOR, label="captions", zorder=2)
    ax.legend(loc="best")
    return fig


def _separate_projections(px: np.ndarray, py: np.ndarray, method: str, seed: int) -> Figure:
    zx, zy = project_2d(px, method, seed), project_2d(py, method, seed)
    fig = Figure(figsize=(12, 5.5))
    for i, (z, name) in enumerate(((zx, "images"), (zy, "captions"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(*z.T, s=12, c=zx[:, 0], cmap="viridis")
        ax.set_title(f"{name} (colour: image's first coordinate)")
    return fig


def plot_distance_histograms(
    matched: np.ndarray,
    random: np.ndarray,
    path: str | Path,
    *,
    metric: str = "cosine",
    bins: int = 50,
    title: str | None = None,
) -> list[Path]:
    """Overlaid density histograms of matched and random-pair distances (shared bins), means
    marked, the separation AUC in the title (see measures.pair_distances for the inputs)."""
    edges = np.histogram_bin_edges(np.r_[matched, random], bins=bins)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for d, name, color in ((matched, "matched", CORRECT), (random, "random", "tab:red")):
        ax.hist(d, bins=edges, density=True, alpha=0.5, color=color, label=f"{name} (n={len(d)})")
        ax.axvline(float(np.mean(d)), color=color, ls="--", lw=1)
    ax.set_xlabel(f"{metric} distance")
    ax.set_ylabel("density")
    ax.legend()
    head = f"matched vs random pairs, AUC = {separation_auc(matched, random):.3f}"
    ax.set_title(f"{title}\n{head}" if title else head)
    return save_figure(fig, path)


def plot_measures_vs_recall(
    rows: Sequence[Mapping[str, object]],
    measures: Sequence[str],
    target: str,
    path: str | Path,
    *,
    q_values: Mapping[str, float],
    label_key: str | None = None,
) -> list[Path]:
    """One scatter per measure (x) against `target` recall (y) across configurations (rows);
    each panel's title gives Spearman rho, the measure's q (from `q_values`: p adjusted for
    multiple tests, e.g. the gap study's Benjamini-Hochberg q) and n. Points labelled by
    row[label_key] if given."""
    if not measures:
        raise ValueError("no measures to plot")
    stats = rank_correlations(rows, measures, target)
    ncols = min(3, len(measures))
    nrows = -(-len(measures) // ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.8 * nrows), layout="constrained")
    for i, (name, st) in enumerate(zip(measures, stats, strict=True)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        kept, a, b = measure_target_pairs(rows, name, target)
        ax.scatter(a, b, s=18)
        if label_key:
            for r, u, v in zip(kept, a, b, strict=True):
                ax.annotate(str(rows[r].get(label_key, "")), (u, v), fontsize=6, alpha=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel(target)
        _readable_ticks(ax)
        ax.set_title(panel_title(float(st["rho"]), q_values[name], int(st["n"])))
    return save_figure(fig, path)


def plot_across_pairs(
    points: Mapping[str, Sequence[Mapping[str, object]]],
    measures: Sequence[str],
    target: str,
    path: str | Path,
    *,
    stats: Mapping[tuple[str, str], str],
    label_key: str = "encoder",
) -> list[Path]:
    """One scatter per measure (x) against `target` (y), one point per encoder pair and one
    colour per system (`points` maps a system to its points); `stats[system, measure]` is the
    line of numbers (rho and its CI) the panel's legend gives that system. Points labelled by
    row[label_key]."""
    if not measures:
        raise ValueError("no measures to plot")
    ncols = min(3, len(measures))
    nrows = -(-len(measures) // ncols)
    fig = Figure(figsize=(4.8 * ncols, 4.2 * nrows), layout="constrained")
    for i, name in enumerate(measures):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k, (system, rows) in enumerate(points.items()):
            kept, a, b = measure_target_pairs(rows, name, target)
            if not len(kept):  # the system has no such measure (a learned scorer's space)
                continue
            ax.scatter(
                a, b, s=18, color=f"C{k}", label=f"{system}: {stats.get((system, name), '')}"
            )
            for r, u, v in zip(kept, a, b, strict=True):
                label = str(rows[r].get(label_key, ""))
                ax.annotate(label, (u, v), fontsize=5, alpha=0.7, color=f"C{k}")
        ax.set_xlabel(name)
        ax.set_ylabel(target)
        _readable_ticks(ax)
        ax.legend(fontsize=6, loc="best", frameon=False)
    return save_figure(fig, path)


def panel_title(rho: float, q: float, n: int) -> str:
    """A measure-vs-recall panel's title: the adjusted q, never the raw p."""
    if not np.isfinite(rho):
        return f"Spearman \u03c1 not computable (n = {n})"
    return f"Spearman \u03c1 = {rho:.2f} (q = {q:.2g}, n = {n})"


def _readable_ticks(ax: Axes) -> None:
    """At most four plain-number ticks per axis (no offset text, powers of ten only for very
    large or small values), so labels neither overlap nor need decoding."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=4))
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_powerlimits((-3, 4))
        axis.set_major_formatter(fmt)
    ax.tick_params(labelsize=8)


def plot_caption_queries(
    queries: Sequence[str],
    image_paths: Sequence[str | Path],
    topk: np.ndarray,
    truth: Sequence[int],
    path: str | Path,
    *,
    thumb: int = 128,
) -> list[Path]:
    """Text->image examples: per query caption (row), its top-k images (topk[i] indexes
    image_paths, best first) as thumbnails; the correct image (truth[i]) framed in green."""
    topk = _check_topk(topk, len(queries), len(truth), len(image_paths), "image_paths")
    n, k = topk.shape
    fig = Figure(figsize=(2.2 + 1.6 * k, 1.7 * n))
    grid = fig.add_gridspec(n, k + 1, width_ratios=[2.2] + [1.6] * k)
    for i, (query, hits) in enumerate(zip(queries, topk, strict=True)):
        text_ax = fig.add_subplot(grid[i, 0])
        _text_cell(text_ax, textwrap.fill(query, 28), fontsize=8)
        for j, idx in enumerate(hits):
            ax = fig.add_subplot(grid[i, j + 1])
            im = load_rgb(image_paths[idx])
            im.thumbnail((thumb, thumb))
            ax.imshow(np.asarray(im))
            _frame(ax, idx == truth[i])
            ax.set_title(f"#{j + 1}", fontsize=7)
    return save_figure(fig, path, svg=False)


def plot_image_queries(
    query_images: Sequence[str | Path],
    captions: Sequence[str],
    topk: np.ndarray,
    truth: Sequence[Collection[int]],
    path: str | Path,
    *,
    thumb: int = 128,
    width: int = 70,
) -> list[Path]:
    """Image->text examples: per query image (row), its top-k captions (topk[i] indexes
    captions, best first); captions in truth[i] (the image's own) in green with a check mark."""
    topk = _check_topk(topk, len(query_images), len(truth), len(captions), "captions")
    n, k = topk.shape
    fig = Figure(figsize=(9, 0.45 * k * n + 0.3 * n))
    grid = fig.add_gridspec(n, 2, width_ratios=[1, 4])
    for i, hits in enumerate(topk):
        ax = fig.add_subplot(grid[i, 0])
        im = load_rgb(query_images[i])
        im.thumbnail((thumb, thumb))
        ax.imshow(np.asarray(im))
        _frame(ax, None)
        text_ax = fig.add_subplot(grid[i, 1])
        _text_cell(text_ax, "")
        own = set(truth[i])
        for j, idx in enumerate(hits):
            ok = int(idx) in own
            line = textwrap.shorten(captions[idx], width)
            text_ax.text(
                0.0,
                1.0 - (j + 0.5) / k,
                f"{j + 1}. {CHECK if ok else ''}{line}",
                color=CORRECT if ok else "black",
                fontweight="bold" if ok else "normal",
                fontsize=8,
                va="center",
                transform=text_ax.transAxes,
            )
    return save_figure(fig, path, svg=False)


def _check_topk(
    topk: np.ndarray, n_queries: int, n_truth: int, gallery: int, name: str
) -> np.ndarray:
    topk = np.asarray(topk)
    if topk.ndim != 2 or len(topk) != n_queries or n_truth != n_queries:
        raise ValueError(
            f"topk must be (queries x k) with one truth per query: got topk {topk.shape}, "
            f"{n_queries} queries, {n_truth} truths"
        )
    if topk.size and (topk.min() < 0 or topk.max() >= gallery):
        raise ValueError(f"topk indexes outside {name} (length {gallery})")
    return topk


def _text_cell(ax: Axes, text: str, fontsize: int = 8) -> None:
    ax.axis("off")
    ax.text(0.0, 0.5, text, fontsize=fontsize, va="center", transform=ax.transAxes)


def _frame(ax: Axes, correct: bool | None) -> None:
    """Hide ticks; a thick green frame for a correct hit, a thin grey one otherwise."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(CORRECT if correct else WRONG)
        spine.set_linewidth(4 if correct else 0.8)
