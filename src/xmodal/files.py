"""xmodal's own files, written so they cannot rot unnoticed: atomic replacement (a reader sees
the old file or the new one, never half of one), SHA-256 checksums verified on load, and OS
errors that name their reason and path.

Every stage may use this module; it imports nothing from xmodal.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

#: suffix of the checksum file kept beside an artifact that has no room for one inside
CHECKSUM_SUFFIX = ".sha256"


class IntegrityError(ValueError):
    """A file xmodal wrote does not read back as written (corrupt, truncated, edited)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """One digest of named arrays: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    return digest.hexdigest()


def sampled_sha256(path: str | Path, blocks: int = 16, block: int = 1 << 16) -> str:
    """SHA-256 of a file's size and of `blocks` evenly spaced blocks of it (1 MiB in all): a
    check of a file of any size in milliseconds. It finds truncation, growth, a replaced file
    and damage inside the sampled blocks; damage elsewhere only the full digest finds."""
    size = Path(path).stat().st_size
    digest = hashlib.sha256(f"{size}|".encode())
    span = max(size - block, 0)
    with open(path, "rb") as f:
        for k in range(blocks):
            f.seek(span * k // max(blocks - 1, 1))
            digest.update(f.read(block))
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block ends without error the file is
    flushed to disk and renamed over `path`, otherwise it is removed. The temporary file gets
    the umask's normal permissions (mkstemp would make it private)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not e.filename:  # a failed write() names no file
            e.filename = str(path)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_checksum(path: str | Path) -> str:
    """Record the SHA-256 of a finished file in `<path>.sha256`; returns the digest."""
    digest = sha256_file(path)
    atomic_write_text(f"{path}{CHECKSUM_SUFFIX}", f"{digest}  {Path(path).name}\n")
    return digest


def verify_checksum(path: str | Path, expected: str | None = None) -> None:
    """Raise IntegrityError unless the file's SHA-256 equals `expected` (default: the digest
    recorded in `<path>.sha256`)."""
    path = Path(path)
    if expected is None:
        sidecar = Path(f"{path}{CHECKSUM_SUFFIX}")
        try:
            expected = sidecar.read_text(encoding="utf-8").split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            raise IntegrityError(path, f"its checksum file {sidecar.name} is missing") from None
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise IntegrityError(path, f"cannot be read ({e.strerror or e})") from None
    if actual != expected:
        raise IntegrityError(path, "checksum mismatch: the file is corrupt or was changed")


def require_finite(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Raise IntegrityError naming the first array holding NaN or inf."""
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise IntegrityError(path, f"{name} holds NaN or inf values")


def describe_os_error(e: OSError) -> str:
    """'reason: path' for an OSError, never a bare number ("xmodal: error: 28")."""
    reason = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    if e.errno == errno.ENOSPC:
        reason += " (free some space, or point cache_dir/runs_dir elsewhere)"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += " (choose a writable folder)"
    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p)
    return f"{reason}: {where}" if where else reason
