"""The embedding cache: content-addressed, atomic, resumable.

Layout: ROOT/<encoder fingerprint slug>/shard-<n>-<uuid>.npz, each shard holding `keys`
(content hashes: of the image file's bytes, or of the caption text) and `vectors`. Only
missing keys are encoded, in chunks; every finished chunk is written to a temporary file and
renamed into place, so a killed run leaves only whole shards and the next run resumes where it
stopped, embedding every item exactly once. The encoder's fingerprint (spec + preprocessing
version) names the folder, so a change of model or preprocessing never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from xmodal.encoders.base import ImageEncoder, OnError, TextEncoder

SHARD_SIZE = 512


def file_key(path: str | Path) -> str:
    """Content hash of a file (a missing file gets a key that never matches a cached one)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return f"missing:{path}"
    return h.hexdigest()


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class EmbeddingStore:
    """Cached embeddings of images and texts under `root`."""

    def __init__(self, root: str | Path, shard_size: int = SHARD_SIZE) -> None:
        self.root = Path(root)
        self.shard_size = shard_size
        #: shards that could not be read (path, reason); their items are embedded again
        self.unreadable: list[tuple[str, str]] = []

    def images(
        self,
        encoder: ImageEncoder,
        paths: Sequence[str | Path],
        progress: bool = False,
        on_error: OnError | None = None,
    ) -> np.ndarray:
        """len(paths) x dim vectors; undecodable images are reported to `on_error` (index,
        message) and left as NaN rows (they are not cached, so a fixed file is picked up)."""
        keys = [file_key(p) for p in paths]
        by_key = {k: p for k, p in zip(keys, paths, strict=True)}

        def encode(missing: list[str], report: OnError, done: Callable[[int], None]) -> np.ndarray:
            return encoder.encode_images(
                [by_key[k] for k in missing], progress=done, on_error=report
            )

        return self._lookup(encoder, keys, encode, on_error, progress)

    def texts(
        self,
        encoder: TextEncoder,
        texts: Sequence[str],
        progress: bool = False,
        on_error: OnError | None = None,
    ) -> np.ndarray:
        """len(texts) x dim vectors; rows the encoder could not embed are reported and NaN."""
        keys = [text_key(t) for t in texts]
        by_key = dict(zip(keys, texts, strict=True))

        def encode(missing: list[str], report: OnError, done: Callable[[int], None]) -> np.ndarray:
            return encoder.encode_texts([by_key[k] for k in missing], progress=done)

        return self._lookup(encoder, keys, encode, on_error, progress)

    def folder(self, fingerprint: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint)[:80]
        return self.root / f"{slug}-{hashlib.sha1(fingerprint.encode()).hexdigest()[:8]}"

    def _lookup(
        self,
        encoder: ImageEncoder | TextEncoder,
        keys: list[str],
        encode: Callable[[list[str], OnError, Callable[[int], None]], np.ndarray],
        on_error: OnError | None,
        progress: bool,
    ) -> np.ndarray:
        folder = self.folder(encoder.fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        cached = self._read(folder)
        missing = list(dict.fromkeys(k for k in keys if k not in cached))  # unique, in order
        failed: dict[str, str] = {}
        quiet = not progress or not missing
        bar = tqdm(total=len(missing), desc=encoder.fingerprint, unit="item", disable=quiet)
        for s in range(0, len(missing), self.shard_size):
            chunk = missing[s : s + self.shard_size]

            def report(i: int, msg: str, chunk=chunk) -> None:
                failed[chunk[i]] = msg

            vectors = np.asarray(encode(chunk, report, bar.update), np.float32)
            finite = np.isfinite(vectors).all(axis=1)
            for i in np.flatnonzero(~finite):
                failed.setdefault(chunk[i], "the encoder produced NaN/inf values")
            good = [i for i, k in enumerate(chunk) if k not in failed]
            self._write(folder, [chunk[i] for i in good], vectors[good])
            cached.update((chunk[i], vectors[i]) for i in good)
        bar.close()
        out = np.full((len(keys), encoder.dim), np.nan, np.float32)
        for row, k in enumerate(keys):
            if k in cached:
                out[row] = cached[k]
            elif on_error is not None:
                on_error(row, failed.get(k, "not embedded"))
        return out

    def _read(self, folder: Path) -> dict[str, np.ndarray]:
        cached: dict[str, np.ndarray] = {}
        for shard in sorted(folder.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    cached.update(zip(z["keys"].tolist(), z["vectors"], strict=True))
            except (OSError, ValueError, KeyError) as e:
                self.unreadable.append((str(shard), str(e)))
        return cached

    def _write(self, folder: Path, keys: list[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        n = len(list(folder.glob("shard-*.npz")))
        final = folder / f"shard-{n:06d}-{uuid.uuid4().hex[:8]}.npz"
        tmp = folder / f".{final.name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), vectors=vectors)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
