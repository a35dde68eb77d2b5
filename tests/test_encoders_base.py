"""The image pipeline of `ImageEncoder` (order, batching, errors, bounded prefetch) on real PNG
files, and the optimised EfficientNet-Lite0 against the package's own model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from xmodal.data.images import ImageError
from xmodal.encoders.base import ImageEncoder
from xmodal.encoders.default_pair import EfficientNetLite0, letterbox, load_efficientnet_lite0


def colour(i: int) -> tuple[int, int, int]:
    return (i * 7 % 256, i * 13 % 256, 255 - i)


class MeanColour(ImageEncoder):
    """A real encoder whose embedding of a solid-colour image is its colour. Decoding of early
    images is slowed down, so workers finish out of order; every step is recorded."""

    spec, dim = "mean-colour", 3

    def __init__(self, n: int, embed_seconds: float = 0.0) -> None:
        self.n, self.embed_seconds = n, embed_seconds
        self.lock = threading.Lock()
        self.decoded = 0
        self.embedded = 0
        self.ahead: list[int] = []  # decoded but not yet embedded, after each forward pass

    def preprocess(self, image) -> torch.Tensor:
        rgb = np.asarray(image, dtype=np.float32).mean(axis=(0, 1))
        time.sleep(0.002 * max(0, self.n - int(255 - rgb[2])) / self.n)  # earlier = slower
        with self.lock:
            self.decoded += 1
        return torch.from_numpy(rgb).reshape(3, 1, 1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        time.sleep(self.embed_seconds)
        with self.lock:
            self.embedded += len(pixels)
            self.ahead.append(self.decoded - self.embedded)
        return pixels.flatten(1).clone()


@pytest.fixture(scope="module")
def solid_pngs(tmp_path_factory) -> list[str]:
    """40 solid-colour PNGs of different sizes, one with an alpha channel."""
    root = tmp_path_factory.mktemp("solid")
    paths = []
    for i in range(40):
        mode = "RGBA" if i == 5 else "RGB"
        fill = colour(i) + ((255,) if mode == "RGBA" else ())
        path = root / f"{i:02d}.png"
        Image.new(mode, (8 + i, 30 - i % 7), fill).save(path)
        paths.append(str(path))
    return paths


def expected(n: int) -> np.ndarray:
    return np.array([colour(i) for i in range(n)], dtype=np.float32)


@pytest.mark.parametrize("workers", [1, 4])
def test_rows_come_back_in_input_order(solid_pngs, workers):
    enc = MeanColour(len(solid_pngs))
    out = enc.encode_images(solid_pngs, batch_size=6, workers=workers)
    np.testing.assert_array_equal(out, expected(len(solid_pngs)))


def test_batch_size_does_not_change_the_result(solid_pngs):
    enc = MeanColour(len(solid_pngs))
    reference = enc.encode_images(solid_pngs, batch_size=1, workers=1)
    for bs in (3, 7, 40, 100):
        np.testing.assert_array_equal(enc.encode_images(solid_pngs, batch_size=bs), reference)


def test_undecodable_images_are_reported_and_left_nan(solid_pngs, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    paths = solid_pngs[:3] + [str(empty)] + solid_pngs[3:5] + [str(tmp_path / "gone.png"), text]
    errors: list[tuple[int, str]] = []
    done: list[int] = []
    out = MeanColour(40).encode_images(
        paths, batch_size=2, on_error=lambda i, m: errors.append((i, m)), progress=done.append
    )
    assert [i for i, _ in errors] == [3, 6, 7]
    assert [Path(m.split(":")[0]).name for _, m in errors] == ["empty.png", "gone.png", "text.png"]
    assert np.isnan(out[[3, 6, 7]]).all()
    np.testing.assert_array_equal(out[[0, 1, 2, 4, 5]], expected(5))
    assert sum(done) == len(paths)
    with pytest.raises(ImageError, match="text.png"):
        MeanColour(40).encode_images([solid_pngs[0], str(text)], batch_size=1)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_decoding_runs_ahead_of_the_model_by_at_most_prefetch_batches(solid_pngs, prefetch):
    bs = 3
    enc = MeanColour(len(solid_pngs), embed_seconds=0.02)
    enc.prefetch = prefetch
    enc.encode_images(solid_pngs, batch_size=bs, workers=4)
    assert enc.embedded == len(solid_pngs)
    assert max(enc.ahead) <= prefetch * bs  # counted after the batch in flight is embedded
    if prefetch:  # the slow model leaves time for the next batches to decode meanwhile
        assert max(enc.ahead) > bs


# --- EfficientNet-Lite0: the fused inference model against the package's model -------------


def drawings(root: Path) -> list[str]:
    """A few real-looking images: shapes on white, a transparent stamp, a large photo-like JPEG
    gradient with noise, a thin strip."""
    rng = np.random.default_rng(0)
    paths = []
    shapes = Image.new("RGB", (300, 200), "white")
    draw = ImageDraw.Draw(shapes)
    draw.ellipse((20, 20, 180, 160), fill=(200, 30, 40))
    draw.rectangle((150, 60, 280, 190), fill=(20, 90, 210), outline="black", width=5)
    stamp = Image.new("RGBA", (128, 160), (0, 0, 0, 0))
    ImageDraw.Draw(stamp).polygon([(64, 5), (120, 150), (8, 150)], fill=(30, 160, 60, 255))
    yy, xx = np.mgrid[0:700, 0:1000]
    photo = np.stack([xx * 255 / 1000, yy * 255 / 700, (xx + yy) % 256], axis=-1)
    photo = np.clip(photo + rng.normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    strip = rng.integers(0, 256, (20, 90, 3), dtype=np.uint8)
    images = [
        ("shapes.png", shapes),
        ("stamp.png", stamp),
        ("photo.jpg", Image.fromarray(photo)),
        ("strip.png", Image.fromarray(strip)),
    ]
    for name, image in images:
        image.save(root / name)
        paths.append(str(root / name))
    return paths


@pytest.fixture(scope="module")
def effnet() -> EfficientNetLite0:
    return EfficientNetLite0(device="cpu", batch_size=3)


def reference_features(paths: list[str]) -> np.ndarray:
    """The package's own model on the original float preprocessing, pooled like the encoder."""
    from xmodal.data.images import load_rgb

    model = load_efficientnet_lite0()
    pixels = []
    for p in paths:
        x = np.asarray(letterbox(load_rgb(p), 224), dtype=np.float32)
        pixels.append(torch.from_numpy((x / 255.0 - 0.5) / 0.5).permute(2, 0, 1))
    with torch.inference_mode():
        return model.extract_features(torch.stack(pixels)).mean(dim=(2, 3)).numpy()


def test_fused_effnet_matches_the_package_model(effnet, tmp_path):
    paths = drawings(tmp_path)
    reference = reference_features(paths)
    for bs in (1, 3):
        out = effnet.encode_images(paths, batch_size=bs)
        assert out.shape == (len(paths), 1280) and out.dtype == np.float32
        for got, want in zip(out, reference, strict=True):
            rel = np.abs(got - want).max() / np.abs(want).max()
            assert rel < 1e-4, rel
    assert np.abs(reference[0] - reference[2]).max() > 0.1  # different images, different rows
