"""The encoder protocol: images or texts in, float32 arrays out, batching inside.

Encoders are lazy (`LazyModel`): building one reads no weights, and its cache `fingerprint`
comes from the spec and the class alone, so a run whose embeddings are cached never loads a
model. The weights load on first use (`ready()`, which encoding calls).

Image encoders split the work into `preprocess` (one decoded PIL image -> CHW tensor, run in
worker threads) and `embed` (a batch tensor -> vectors, the model's forward pass), so that
decoding the next batches overlaps with the forward pass of the current one.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from tqdm.auto import tqdm

from xmodal.data.images import DECODING, ImageError, load_rgb

OnError = Callable[[int, str], None]
#: True for a progress bar of its own, or a callback told how many items were just done
Progress = bool | Callable[[int], None]
#: (the decoded items stacked, or None; their indices; (index, message) of the undecodable ones)
Batch = tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_KEEP_FREED_BYTES = 512 << 20


def _progress_bar(progress: Progress, total: int, desc: str, unit: str) -> Callable[[int], None]:
    if callable(progress):
        return progress
    bar = tqdm(total=total, desc=desc, disable=not progress, unit=unit, leave=False)

    def done(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return done


def default_device() -> str:
    """cuda when a GPU is present, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class LazyModel:
    """A model built from its spec at once, its weights loaded on first use.

    A subclass reads its weights in `load` and sets there whatever needs them (the model, a
    `dim` only the model knows). `ready()` runs `load` once per object, under one lock, so
    threads that meet an unloaded model wait for it rather than load it twice.
    """

    _loaded = False
    _loading = threading.RLock()  # re-entrant: a shared model's encoders load it inside `load`

    def load(self) -> None:
        """Read the weights (nothing, for a model without any)."""

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ready(self) -> Self:
        """This object, its weights loaded."""
        if not self._loaded:
            with LazyModel._loading:
                if not self._loaded:
                    self.load()
                    self._loaded = True
        return self

    @property
    def dim(self) -> int:
        """The size of the vectors: a class attribute where it is known without the weights,
        else set by `load`."""
        if "_dim_value" not in vars(self):
            self.ready()
        try:
            return vars(self)["_dim_value"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__}.load() did not set dim") from None

    @dim.setter
    def dim(self, value: int) -> None:
        self._dim_value = value


@functools.cache
def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning it to the OS at once.

    A CPU forward pass allocates and frees activations of tens of MB per layer. With glibc's
    defaults each one is a fresh mmap whose pages fault in again: measured on EfficientNet-Lite0
    at batch 32, 5.7k page faults and 15 ms of kernel time per image on top of 18 ms of compute.
    Fixed thresholds keep up to 512 MB of freed memory in the process. Process-wide, once;
    XMODAL_KEEP_FREED_MEMORY=0 turns it off.
    """
    if platform.libc_ver()[0] != "glibc" or os.environ.get("XMODAL_KEEP_FREED_MEMORY") == "0":
        return
    mallopt = ctypes.CDLL(None).mallopt
    mallopt(_M_MMAP_THRESHOLD, _KEEP_FREED_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES)


@dataclass(frozen=True)
class ClassifierHead:
    """The linear classifier an image encoder was trained with, on its own output vectors:
    logits = vectors @ weight.T + bias, one named class per row of `weight`."""

    weight: np.ndarray
    bias: np.ndarray
    labels: list[str]

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.weight.ndim != 2 or self.weight.shape[0] != n or self.bias.shape != (n,):
            raise ValueError(
                f"classifier head: weight {self.weight.shape}, bias {self.bias.shape} and "
                f"{n} labels disagree"
            )

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ self.weight.T + self.bias


class ImageEncoder(LazyModel, ABC):
    """Turns image files into float32 vectors of size `dim`."""

    spec: str
    batch_size: int = 32
    #: where `embed` runs; CPU batches bound for a GPU are pinned and copied asynchronously
    device: str = "cpu"
    #: batches decoded ahead of the one in the forward pass: overlap, with bounded memory
    prefetch: int = 2
    #: bump when preprocessing changes, so cached embeddings are not reused wrongly (changes of
    #: decoding, shared by every encoder, bump xmodal.data.images.DECODING)
    preprocessing: str = "v1"

    @property
    def fingerprint(self) -> str:
        return f"image:{self.spec}:{self.preprocessing}:{DECODING}"

    def classifier(self) -> ClassifierHead | None:
        """The pretrained classifier on top of `encode_images` vectors, when the model has one
        (its class names give images a meaning in text space: see the `conse` aligner)."""
        return None

    @abstractmethod
    def preprocess(self, image) -> torch.Tensor:
        """One RGB PIL image -> a CHW tensor (runs in worker threads)."""

    @abstractmethod
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """A NCHW batch of `preprocess` outputs -> N x dim embeddings (under inference mode)."""

    def encode_images(
        self,
        paths: Sequence[str | Path],
        batch_size: int | None = None,
        progress: Progress = False,
        on_error: OnError | None = None,
        workers: int = 2,
    ) -> np.ndarray:
        """Embed image files, in input order, decoding in `workers` threads while the model runs.

        An undecodable image raises ImageError, or, when `on_error` is given, is reported to it
        (index, message) and left as a row of NaN.
        """
        self.ready()  # before the decoding threads start: `preprocess` may need the model
        out = np.full((len(paths), self.dim), np.nan, dtype=np.float32)
        done = _progress_bar(progress, len(paths), f"images {self.spec}", "img")
        batches = self._decoded(paths, batch_size or self.batch_size, workers)
        with closing(batches):  # an error stops the decoding still in flight
            for pixels, rows, errors in batches:
                for i, msg in errors:
                    if on_error is None:
                        raise ImageError(msg)
                    on_error(i, msg)
                if rows:
                    out[rows] = self.embed_batch(pixels)
                done(len(rows) + len(errors))
        return out

    def embed_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """The forward pass alone, as the pipeline runs it: a preprocessed NCHW batch ->
        float32 rows (inference mode; a GPU gets the batch by a non-blocking pinned copy)."""
        self.ready()
        keep_freed_memory()
        if torch.device(self.device).type == "cuda" and pixels.device.type == "cpu":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            return self.embed(pixels).float().cpu().numpy()

    def _load(self, path: str | Path) -> torch.Tensor | str:
        try:
            return self.preprocess(load_rgb(path))
        except ImageError as e:
            return str(e)

    def _decoded(
        self, paths: Sequence[str | Path], batch_size: int, workers: int
    ) -> Iterator[Batch]:
        """Decoded batches in input order. Batch k+1..k+prefetch decode while batch k is
        embedded; no more are submitted, so memory stays bounded however slow the model."""
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
        pending: deque[tuple[int, list[Future]]] = deque()
        try:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                pending.append((start, [pool.submit(self._load, p) for p in chunk]))
                if len(pending) > self.prefetch:
                    yield _collate(*pending.popleft())
            while pending:
                yield _collate(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _collate(start: int, futures: list[Future]) -> Batch:
    rows, tensors, errors = [], [], []
    for i, fut in enumerate(futures, start):
        res = fut.result()
        if isinstance(res, str):
            errors.append((i, res))
        else:
            rows.append(i)
            tensors.append(res)
    return (torch.stack(tensors) if tensors else None), rows, errors


class TextEncoder(LazyModel, ABC):
    """Turns caption strings into float32 vectors of size `dim`."""

    spec: str
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
        self.ready()
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
