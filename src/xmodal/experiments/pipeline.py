"""The wiring shared by the runner and the CLI: dataset -> cached embeddings -> split arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.data.dataset import Dataset, Problem, split_ids
from xmodal.embeddings import Embedded
from xmodal.encoders.base import ImageEncoder, TextEncoder
from xmodal.shards import ShardedEmbeddings
from xmodal.shards.format import SOURCE_PREFIX
from xmodal.store import EmbeddingStore

EMBEDDINGS = SOURCE_PREFIX


@dataclass
class EmbeddedDataset:
    """A dataset (with unusable items dropped) and the vectors of its images and captions."""

    dataset: Dataset
    images: np.ndarray
    texts: np.ndarray

    @property
    def all(self) -> Embedded:
        return Embedded(self.images, self.texts, self.dataset.caption_image)

    def subset(self, image_ids: set[str] | list[str]) -> EmbeddedDataset:
        """These images, their captions and the matching vector rows (dataset order kept)."""
        keep = set(image_ids)
        image_rows = [i for i, im in enumerate(self.dataset.images) if im.id in keep]
        caption_rows = [j for j, c in enumerate(self.dataset.captions) if c.image_id in keep]
        return EmbeddedDataset(
            self.dataset.subset(keep), self.images[image_rows], self.texts[caption_rows]
        )

    def split(self, fractions: dict[str, float], seed: int) -> dict[str, EmbeddedDataset]:
        """Split by image, so that captions of one image never fall in two splits."""
        return {
            name: self.subset(ids) for name, ids in split_ids(self.dataset, fractions, seed).items()
        }


def load_embedded(folder: str | Path) -> tuple[EmbeddedDataset, ShardedEmbeddings]:
    """A collection embedded by `xmodal embed` (on any machine or cluster), in memory, every
    shard verified; and the folder's reader (encoder specs, problems, shard access)."""
    shards = ShardedEmbeddings(folder)
    return EmbeddedDataset(*shards.load()), shards


def embed_dataset(
    dataset: Dataset,
    image_encoder: ImageEncoder,
    text_encoder: TextEncoder,
    store: EmbeddingStore,
    progress: bool = True,
) -> EmbeddedDataset:
    """Embed every image and caption (cached); drop undecodable images and unembeddable
    captions, recording each as a Problem on the returned dataset."""
    problems: list[Problem] = []
    bad_images: set[str] = set()

    def image_failed(row: int, msg: str) -> None:
        problems.append(Problem(str(dataset.images[row].path), msg))
        bad_images.add(dataset.images[row].id)

    bad_captions: set[str] = set()

    def text_failed(row: int, msg: str) -> None:
        problems.append(Problem(f"caption {dataset.captions[row].id}", msg))
        bad_captions.add(dataset.captions[row].id)

    images = store.images(
        image_encoder, [im.path for im in dataset.images], progress=progress, on_error=image_failed
    )
    texts = store.texts(
        text_encoder, [c.text for c in dataset.captions], progress=progress, on_error=text_failed
    )
    problems += [
        Problem(path, f"unreadable cache shard ({why}), re-embedded")
        for path, why in store.unreadable
    ]
    if not (bad_images or bad_captions or problems):
        return EmbeddedDataset(dataset, images, texts)
    keep_caps = [c for c in dataset.captions if c.id not in bad_captions]
    cleaned = Dataset(
        dataset.name,
        [im for im in dataset.images if im.id not in bad_images],
        [c for c in keep_caps if c.image_id not in bad_images],
        problems=[*dataset.problems, *problems],
        translations=dataset.translations,
        given_splits=dataset.given_splits,
    )
    image_row = {im.id: i for i, im in enumerate(dataset.images)}
    caption_row = {c.id: i for i, c in enumerate(dataset.captions)}
    return EmbeddedDataset(
        cleaned,
        images[[image_row[im.id] for im in cleaned.images]],
        texts[[caption_row[c.id] for c in cleaned.captions]],
    )
