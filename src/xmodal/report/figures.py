"""The pictures of a run report, drawn from the run folder's saved test splits and aligners.

Every picture is written as PNG + SVG by `xmodal.geometry.plots`; a `Picture` keeps the paths
and the words the page shows with it, including what its colours mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.align.base import Aligner, Scorer, load_aligner
from xmodal.embeddings import Embedded
from xmodal.experiments.run_folder import RunFolder, slug
from xmodal.files import CHECKSUM_SUFFIX, verify_checksum
from xmodal.geometry import pair_distances
from xmodal.geometry import plots as gp

TOP_K = 5


#: what the colours of a PCA view mean (xmodal.geometry.plots draws them)
JOINT_COLOURS = (
    "blue dots are images, orange dots captions; a grey line joins each image to its first caption."
)
SEPARATE_COLOURS = (
    "each pair has one colour in both panels: its image's position on the images' first "
    "principal component (viridis scale, dark purple = low, yellow = high), so structure the "
    "two spaces share shows as the same gradient."
)


@dataclass
class Picture:
    section: str
    title: str
    caption: str
    paths: list[Path]  # [png, svg]
    colours: str  # what the colours mean, shown under the picture


@dataclass
class TestSplit:
    """A run's saved test split of one dataset x encoder pair (embeddings/<name>.npz)."""

    data: Embedded
    image_paths: list[str]
    captions: list[str]


def load_split(run_dir: Path, dataset: str, encoder: str) -> TestSplit:
    path = RunFolder(run_dir).split(dataset, encoder)
    try:
        if Path(f"{path}{CHECKSUM_SUFFIX}").is_file():  # runs of older versions wrote none
            verify_checksum(path)
        with np.load(path, allow_pickle=False) as z:
            data = Embedded(z["images"], z["texts"], z["caption_image"].astype(np.int64))
            return TestSplit(
                data, [str(p) for p in z["image_paths"]], list(map(str, z["captions"]))
            )
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the saved test split ({e})") from None


def raw_pictures(split: TestSplit, label: str, folder: Path) -> list[Picture]:
    """The raw encoders' geometry: 2-D PCA of both modalities (and distances if one space)."""
    d = split.data
    name = slug(label)
    out = [
        Picture(
            "geometry",
            f"Raw embeddings: {label}",
            "2-D PCA of the test split before alignment; matched pairs linked when both "
            "modalities share a space, otherwise each modality gets its own panel.",
            gp.plot_projection(d.images, d.texts, d.caption_image, folder / f"pca_raw_{name}"),
            _pca_colours(d),
        )
    ]
    if d.images.shape[1] == d.texts.shape[1]:
        out.append(_histogram(d, f"Raw distances: {label}", folder / f"dist_raw_{name}"))
    return out


def aligned_pictures(row: Mapping[str, Any], d: Embedded, folder: Path) -> list[Picture]:
    """A row's aligned test split `d`: 2-D PCA with pairs linked, matched vs random distances."""
    label = f"{row['aligner']} / {row['metric']} (seed {row['seed']})"
    out = [
        Picture(
            "geometry",
            f"After alignment: {label}",
            "2-D PCA of the aligned test split (the chosen row, first seed), pairs linked.",
            gp.plot_projection(d.images, d.texts, d.caption_image, folder / "pca_aligned_best"),
            _pca_colours(d),
        )
    ]
    if d.images.shape[1] == d.texts.shape[1]:
        out.append(_histogram(d, f"Aligned distances: {label}", folder / "dist_aligned_best"))
    return out


def _pca_colours(d: Embedded) -> str:
    """plot_projection draws one joint view when the dimensions agree, else two panels."""
    return JOINT_COLOURS if d.images.shape[1] == d.texts.shape[1] else SEPARATE_COLOURS


def _histogram(d: Embedded, title: str, path: Path) -> Picture:
    matched, random = pair_distances(d.images, d.texts, d.caption_image, "cosine")
    return Picture(
        "geometry",
        title,
        "Cosine distance of each caption to its own image (matched) and to a random other "
        "image; the AUC is the chance that a random pair is farther than a matched one.",
        gp.plot_distance_histograms(matched, random, path, metric="cosine", title=title),
        "green bars are matched pairs, red bars random pairs (brownish where they overlap); "
        "each dashed line marks its colour's mean.",
    )


def example_pictures(
    score: Scorer, d: Embedded, split: TestSplit, folder: Path, n: int = 4, seed: int = 0
) -> list[Picture]:
    """Retrieval examples of a row (its scorer, its aligned test split `d`): seeded random
    caption and image queries with their top-5 answers, the correct ones marked. Raises
    FileNotFoundError when the image files are not where the run found them."""
    missing = [p for p in split.image_paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} test image(s) not found, e.g. {missing[0]} (image paths are "
            "relative to the folder the run was started from)"
        )
    rng = np.random.default_rng(seed)
    texts = np.sort(rng.choice(len(d.texts), min(n, len(d.texts)), replace=False))
    captioned = np.unique(d.caption_image)
    images = np.sort(rng.choice(captioned, min(n, len(captioned)), replace=False))
    t2i = _top(score(d.texts[texts], d.images))
    i2t = _top(score(d.texts, d.images[images]).T)
    own = [np.flatnonzero(d.caption_image == i).tolist() for i in images]
    return [
        Picture(
            "examples",
            f"Caption queries: top-{t2i.shape[1]} images",
            "Randomly drawn caption queries (seeded), best answer first.",
            gp.plot_caption_queries(
                [split.captions[t] for t in texts],
                split.image_paths,
                t2i,
                d.caption_image[texts].tolist(),
                folder / "examples_t2i",
            ),
            "a thick green frame marks the correct image; other answers have a thin grey one.",
        ),
        Picture(
            "examples",
            f"Image queries: top-{i2t.shape[1]} captions",
            "Randomly drawn image queries (seeded), best answer first.",
            gp.plot_image_queries(
                [split.image_paths[i] for i in images],
                split.captions,
                i2t,
                own,
                folder / "examples_i2t",
            ),
            "the image's own captions are green with a check mark; other captions black.",
        ),
    ]


def _top(scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the k highest scores per row, best first (ties: lower index first)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]


def load_row_aligner(run_dir: Path, row: Mapping[str, Any]) -> Aligner:
    path = run_dir / str(row["model"])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the saved aligner of the chosen row is missing")
    return load_aligner(path)
