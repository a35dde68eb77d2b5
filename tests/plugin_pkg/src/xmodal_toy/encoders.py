"""The `toy` vision-language model: mean pixel colour for images, colour words for texts."""

from __future__ import annotations

import numpy as np
import torch

from xmodal.encoders.base import ImageEncoder, TextEncoder
from xmodal_toy import COLOURS


class MeanColour(ImageEncoder):
    spec, dim = "toy", 3

    def preprocess(self, image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(dim=(2, 3))


class ColourWords(TextEncoder):
    spec, dim = "toy", len(COLOURS)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        names = list(COLOURS)
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                if word in COLOURS:
                    out[row, names.index(word)] = 1
        return out


def toy_pair(device: str | None = None) -> tuple[ImageEncoder, TextEncoder]:
    return MeanColour(), ColourWords()
