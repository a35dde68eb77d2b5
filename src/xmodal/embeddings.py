"""Embedded pairs: the array form of a dataset split that flows between stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Embedded:
    """Image vectors (n_images x d_i), caption vectors (n_captions x d_t) and, per caption, the
    row of its image. Many captions may share one image."""

    images: np.ndarray
    texts: np.ndarray
    caption_image: np.ndarray

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.caption_image):
            raise ValueError(
                f"{len(self.texts)} caption vectors but {len(self.caption_image)} caption links"
            )
        if len(self.caption_image) and (
            self.caption_image.min() < 0 or self.caption_image.max() >= len(self.images)
        ):
            raise ValueError("caption_image points outside the image rows")

    @property
    def paired_images(self) -> np.ndarray:
        """One image vector per caption (the caption's own image): the training pairs."""
        return self.images[self.caption_image]
