"""The encoder protocol: images or texts in, float32 arrays out, batching inside.

Image encoders split the work into `preprocess` (one decoded PIL image -> CHW tensor, run in
worker threads) and `embed` (a batch tensor -> vectors, the model's forward pass), so that
decoding overlaps with the forward pass of the previous batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal.data.images import ImageError, load_rgb

OnError = Callable[[int, str], None]
#: True for a progress bar of its own, or a callback told how many items were just done
Progress = bool | Callable[[int], None]


def _progress_bar(progress: Progress, total: int, desc: str, unit: str) -> Callable[[int], None]:
    if callable(progress):
        return progress
    bar = tqdm(total=total, desc=desc, disable=not progress, unit=unit, leave=False)
    return lambda n: bar.update(n) if bar.n + n < total else bar.close()


def default_device() -> str:
    """cuda when a GPU is present, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class ImageEncoder(ABC):
    """Turns image files into float32 vectors of size `dim`."""

    spec: str
    dim: int
    batch_size: int = 32
    #: bump when preprocessing changes, so cached embeddings are not reused wrongly
    preprocessing: str = "v1"

    @property
    def fingerprint(self) -> str:
        return f"image:{self.spec}:{self.preprocessing}"

    @abstractmethod
    def preprocess(self, image) -> torch.Tensor:
        """One RGB PIL image -> a CHW float tensor."""

    @abstractmethod
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """A NCHW batch -> N x dim embeddings (called under inference mode)."""

    def encode_images(
        self,
        paths: Sequence[str | Path],
        batch_size: int | None = None,
        progress: Progress = False,
        on_error: OnError | None = None,
        workers: int = 2,
    ) -> np.ndarray:
        """Embed image files. An undecodable image raises ImageError, or, when `on_error` is
        given, is reported to it (index, message) and left as a row of NaN."""
        out = np.full((len(paths), self.dim), np.nan, dtype=np.float32)
        done = _progress_bar(progress, len(paths), f"images {self.spec}", "img")
        for idx, pixels, errors in self._batches(paths, batch_size or self.batch_size, workers):
            for i, msg in errors:
                if on_error is None:
                    raise ImageError(msg)
                on_error(i, msg)
            if idx:
                out[idx] = self._forward(pixels)
            done(len(idx) + len(errors))
        return out

    def _forward(self, pixels: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.embed(pixels).float().cpu().numpy()

    def _load(self, path: str | Path) -> torch.Tensor | str:
        try:
            return self.preprocess(load_rgb(path))
        except ImageError as e:
            return str(e)

    def _batches(
        self, paths: Sequence[str | Path], batch_size: int, workers: int
    ) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
        """Decoded batches in order, with at most two batches decoding ahead (bounded memory)."""
        starts = range(0, len(paths), batch_size)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: deque[tuple[int, list[Future]]] = deque()
            for start in starts:
                chunk = paths[start : start + batch_size]
                pending.append((start, [pool.submit(self._load, p) for p in chunk]))
                if len(pending) > 2:
                    yield _collect(*pending.popleft())
            while pending:
                yield _collect(*pending.popleft())


def _collect(start: int, futures: list[Future]):
    idx, tensors, errors = [], [], []
    for j, fut in enumerate(futures):
        res = fut.result()
        if isinstance(res, str):
            errors.append((start + j, res))
        else:
            idx.append(start + j)
            tensors.append(res)
    return idx, (torch.stack(tensors) if tensors else None), errors


class TextEncoder(ABC):
    """Turns caption strings into float32 vectors of size `dim`."""

    spec: str
    dim: int
    batch_size: int = 64
    preprocessing: str = "v1"

    @property
    def fingerprint(self) -> str:
        return f"text:{self.spec}:{self.preprocessing}"

    @abstractmethod
    def embed_texts(self, texts: list[str]) -> torch.Tensor | np.ndarray:
        """One batch of strings -> N x dim embeddings (called under inference mode)."""

    def encode_texts(
        self, texts: Sequence[str], batch_size: int | None = None, progress: Progress = False
    ) -> np.ndarray:
        """Embed captions in batches; returns len(texts) x dim float32."""
        bs = batch_size or self.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # longest-first batching wastes less padding; rows are put back in input order
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        done = _progress_bar(progress, len(texts), f"texts {self.spec}", "txt")
        for s in range(0, len(order), bs):
            rows = order[s : s + bs]
            with torch.inference_mode():
                vec = self.embed_texts([texts[i] for i in rows])
            out[rows] = vec.float().cpu().numpy() if isinstance(vec, torch.Tensor) else vec
            done(len(rows))
        return out
