"""The embedding cache: content-addressed, atomic, resumable, checksummed, shared safely.

Layout: ROOT/<encoder fingerprint slug>/shard-<n>-<uuid>.npz, each shard holding `keys`
(content hashes: of the image file's bytes, or of the caption text), `vectors` and `sha256`
(the digest of the other two). Only missing keys are encoded, in chunks; every finished chunk is
written to a temporary file and renamed into place, so a killed run leaves only whole shards and
the next run resumes where it stopped (and removes the temporary files of writers that died).
The encoder's fingerprint (spec + preprocessing + decoding version) names the folder, so a change
of model or preprocessing never reuses stale vectors. The fingerprint needs no weights, so an
encoder whose items are all cached is never loaded.

A shard that does not read back as written (truncated, bad CRC, checksum mismatch, NaN) is moved
aside as `<shard>.corrupt-<time>`, reported, and its items embedded again.

Runs sharing one cache split the work: a run claims a chunk of missing keys by writing them to
`claims/<uuid>.claim` and holding an flock on it while it embeds them. Others skip claimed keys,
and wait on the claim (a shared flock) when nothing else is left. The kernel drops the flock of a
process that dies, so a stale claim is seen as free and removed. Claims are made under an flock
on the folder's `.lock`, so two runs never claim one key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from tqdm.auto import tqdm

from xmodal.encoders.base import ImageEncoder, OnError, TextEncoder
from xmodal.files import IntegrityError, atomic_path, require_finite, sha256_arrays

SHARD_SIZE = 512
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


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


def read_shard(path: Path) -> tuple[list[str], np.ndarray]:
    """A shard's keys and vectors; IntegrityError naming the file unless it reads as written."""
    if not zipfile.is_zipfile(path):
        raise IntegrityError(path, "truncated, or not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            if absent := sorted({"keys", "vectors", "sha256"} - set(z.files)):
                why = f"no {' or '.join(absent)} array (not a shard, or one from before checksums)"
                raise IntegrityError(path, why)
            keys, vectors, digest = z["keys"], z["vectors"], str(z["sha256"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, IntegrityError):
            raise
        raise IntegrityError(path, f"unreadable ({type(e).__name__}: {e})") from None
    if sha256_arrays({"keys": keys, "vectors": vectors}) != digest:
        raise IntegrityError(path, "checksum mismatch: the shard is corrupt")
    if vectors.ndim != 2 or len(keys) != len(vectors):
        raise IntegrityError(path, f"{len(keys)} keys for vectors of shape {vectors.shape}")
    require_finite(path, {"vectors": vectors})
    return keys.tolist(), vectors


class EmbeddingStore:
    """Cached embeddings of images and texts under `root`."""

    def __init__(self, root: str | Path, shard_size: int = SHARD_SIZE) -> None:
        self.root = Path(root)
        self.shard_size = shard_size
        #: corrupt shards met (path, reason); moved aside and their items embedded again
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
        _sweep_temporaries(folder)
        cached: dict[str, np.ndarray] = {}
        read: set[str] = set()
        wanted = list(dict.fromkeys(keys))  # unique, in order
        failed: dict[str, str] = {}
        bar = tqdm(total=len(wanted), desc=encoder.fingerprint, unit="item", disable=not progress)
        while True:
            with _locked(folder / ".lock"):
                self._read_new(folder, cached, read)
                bar.update(max(0, sum(k in cached or k in failed for k in wanted) - bar.n))
                missing = [k for k in wanted if k not in cached and k not in failed]
                claimed = _live_claims(folder / "claims")
                chunk = [k for k in missing if k not in claimed][: self.shard_size]
                claim = _claim(folder / "claims", chunk) if chunk else None
            if claim is None:
                if not missing:
                    break
                _wait_for_claims(folder / "claims")  # others embed what is left
                continue
            with claim:
                self._embed_chunk(folder, chunk, encode, failed, cached, bar.update)
        bar.close()
        # the width of the cached vectors: an encoder that had nothing to embed stays unloaded
        dim = len(next(iter(cached.values()))) if cached else encoder.dim
        out = np.full((len(keys), dim), np.nan, np.float32)
        for row, k in enumerate(keys):
            if k in cached:
                out[row] = cached[k]
            elif on_error is not None:
                on_error(row, failed.get(k, "not embedded"))
        return out

    def _embed_chunk(
        self,
        folder: Path,
        chunk: list[str],
        encode: Callable[[list[str], OnError, Callable[[int], None]], np.ndarray],
        failed: dict[str, str],
        cached: dict[str, np.ndarray],
        done: Callable[[int], None],
    ) -> None:
        def report(i: int, msg: str) -> None:
            failed[chunk[i]] = msg

        vectors = np.asarray(encode(chunk, report, done), np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        for i in np.flatnonzero(~finite):
            failed.setdefault(chunk[i], "the encoder produced NaN/inf values")
        good = [i for i, k in enumerate(chunk) if k not in failed]
        self._write(folder, [chunk[i] for i in good], vectors[good])
        cached.update((chunk[i], vectors[i]) for i in good)

    def _read_new(self, folder: Path, cached: dict[str, np.ndarray], read: set[str]) -> None:
        """Add the shards not read yet to `cached`; quarantine the corrupt ones."""
        for shard in sorted(folder.glob("shard-*.npz")):
            if shard.name in read:
                continue
            read.add(shard.name)
            try:
                keys, vectors = read_shard(shard)
            except IntegrityError as e:
                self._quarantine(shard, e.reason)
                continue
            cached.update(zip(keys, vectors, strict=True))

    def _quarantine(self, shard: Path, reason: str) -> None:
        aside = shard.with_name(f"{shard.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            shard.rename(aside)
            where = f"moved aside to {aside.name}"
        except OSError as e:
            where = f"could not be moved aside ({e.strerror or e})"
        why = f"{reason}; {where}"
        warnings.warn(
            f"corrupt cache shard {shard}: {why}; its items are embedded again", stacklevel=4
        )
        self.unreadable.append((str(shard), why))

    def _write(self, folder: Path, keys: list[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        n = len(list(folder.glob("shard-*.npz")))
        final = folder / f"shard-{n:06d}-{uuid.uuid4().hex[:8]}.npz"
        arrays = {"keys": np.array(keys), "vectors": vectors}
        with atomic_path(final) as tmp, open(tmp, "wb") as f:
            np.savez(f, sha256=np.array(sha256_arrays(arrays)), **arrays)  # type: ignore[arg-type]


def _sweep_temporaries(folder: Path) -> None:
    """Remove the temporary shard files of writers killed mid-write (named `.NAME.<pid>.tmp`)."""
    for tmp in folder.glob(".shard-*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        f = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as e:
        if e.errno not in _READ_ONLY:
            raise
        yield  # a read-only cache: reading needs no lock, and writing fails naming its file
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextlib.contextmanager
def _held(claim: Path, f: IO[str]) -> Iterator[None]:
    """Hold a claim until the block ends; the file goes before the lock, so a waiter that
    wakes finds the shard written and the claim gone."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            claim.unlink()
        f.close()


def _claim(claims: Path, keys: list[str]) -> contextlib.AbstractContextManager[None]:
    claims.mkdir(exist_ok=True)
    path = claims / f"{uuid.uuid4().hex}.claim"
    f = open(path, "w")  # noqa: SIM115 - held open (and locked) until the claim ends
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write("\n".join(keys))
    f.flush()
    return _held(path, f)


def _live_claims(claims: Path) -> set[str]:
    """Keys claimed by running processes; claims of dead ones (flock free) are removed."""
    live: set[str] = set()
    for path in claims.glob("*.claim"):
        try:
            f = open(path)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue  # finished meanwhile
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                live.update(f.read().split())
                continue
            with contextlib.suppress(OSError):
                path.unlink()  # its process died, or it is being released
    return live


def _wait_for_claims(claims: Path) -> None:
    """Block until one live claim ends (its owner finishes or dies)."""
    for path in claims.glob("*.claim"):
        try:
            with open(path) as f:
                fcntl.flock(f, fcntl.LOCK_SH)
            return
        except FileNotFoundError:
            continue
