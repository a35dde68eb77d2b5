"""The damage the fault-injection tests do to files, and a tiny deterministic text encoder."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import yaml

from xmodal.encoders.base import ImageEncoder, TextEncoder


def flip_bytes(path: Path, at: float = 0.5, n: int = 4) -> None:
    """Invert n bytes from the fraction `at` of the file (a bad sector, a bit-rotten disk)."""
    data = bytearray(path.read_bytes())
    start = min(int(len(data) * at), len(data) - n)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    """Keep the first fraction of the file (a copy or a write cut short)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def disk_full(*args, **kwargs):
    """Stands in for a write call on a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device")


class Letters(TextEncoder):
    """Letter counts: deterministic, and it records every text it is asked to embed."""

    spec = "letters"
    dim = 6

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed_texts(self, texts):
        self.seen += texts
        return np.array([[t.count(c) + 1 for c in "aeiost"] for t in texts], np.float32)


class MeanColour(ImageEncoder):
    spec = "mean-colour"
    dim = 3

    def preprocess(self, image):
        import torch

        return torch.from_numpy(np.asarray(image, np.float32).copy()).permute(2, 0, 1)

    def embed(self, pixels):
        return pixels.mean(dim=(2, 3))


TEXTS = [f"caption {i}: a small test sentence" for i in range(40)]


def tiny_config(tmp_path: Path, aligners: list | None = None) -> Path:
    """A four-image manifest and a config over it with the real default encoders."""
    from PIL import Image

    rows = ["image,caption"]
    for i, colour in enumerate(["red", "green", "blue", "white"]):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
        rows += [f"{i}.png,a {colour} square", f"{i}.png,something {colour}"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    config = {
        "name": "tiny",
        "datasets": [
            {
                "source": f"manifest:{tmp_path / 'm.csv'}",
                "split": {"train": 0.5, "val": 0.0, "test": 0.5},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine", "euclidean"],
        "aligners": aligners or [{"kind": "identity"}],
        "cache_dir": str(tmp_path / "cache"),
        "runs_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "tiny.yaml"
