"""A dataset kept on disk: its images and captions in SQLite, read back a range at a time.

What `Dataset` is for a collection that fits in memory, `Listing` is for one that may not: the
same rules (one caption per caption id, one file per image id, images whose file is missing
dropped with their captions), the same order (images by first appearance, captions by row)
and the same fingerprint, in memory that does not grow with the number of pairs: SQLite keeps
a bounded page cache and builds its indexes by sorting on disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from xmodal.data.dataset import Caption, Dataset, Image, Problem, fingerprint_of

#: SQLite's page cache, in KiB (negative: a size, not a page count); bounds the listing's memory
CACHE_KIB = 64 * 1024

_SCHEMA = """
CREATE TABLE images (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
                     found INTEGER NOT NULL);
CREATE TABLE captions (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, text TEXT NOT NULL,
                       image INTEGER NOT NULL);
"""
# after the last row: the kept images numbered 1..n in order, captions findable by image
_FINISH = """
CREATE TABLE kept (rank INTEGER PRIMARY KEY, image INTEGER NOT NULL);
INSERT INTO kept (image) SELECT seq FROM images WHERE found ORDER BY seq;
CREATE INDEX captions_by_image ON captions (image, seq);
"""


class Listing:
    """Images and captions in a SQLite file at `path` (replaced if it exists; ":memory:" for
    none). Add rows, `finish()`, then read; the file is removed on `close()`."""

    def __init__(self, name: str, path: str | Path = ":memory:") -> None:
        self.name = name
        self.path = Path(path) if path != ":memory:" else None
        if self.path is not None:
            self.path.unlink(missing_ok=True)  # a crashed run's listing
        self._db = sqlite3.connect(self.path or ":memory:")
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)
        self.problems: list[Problem] = []
        self.n_images = self.n_captions = 0
        self._finished = False

    @classmethod
    def from_dataset(cls, dataset: Dataset, path: str | Path = ":memory:") -> Listing:
        """A loaded (already validated) dataset, copied."""
        listing = cls(dataset.name, path)
        listing.problems = list(dataset.problems)
        rows = ((im.id, str(im.path)) for im in dataset.images)
        listing._db.executemany("INSERT INTO images (id, path, found) VALUES (?, ?, 1)", rows)
        seq = {im.id: k for k, im in enumerate(dataset.images, 1)}
        caps = ((c.id, c.text, seq[c.image_id]) for c in dataset.captions)
        listing._db.executemany("INSERT INTO captions (id, text, image) VALUES (?, ?, ?)", caps)
        return listing.finish()

    def add(self, caption_id: str, text: str, image_id: str, path: Path, where: str) -> None:
        """One caption of image `image_id` (file `path`); a caption id seen before, or an image
        id that named another file, is skipped with a problem at `where` (file:line)."""
        db = self._db
        if db.execute("SELECT 1 FROM captions WHERE id = ?", (caption_id,)).fetchone():
            self.problems.append(Problem(where, f"duplicate caption_id {caption_id!r}"))
            return
        image = db.execute("SELECT seq, path FROM images WHERE id = ?", (image_id,)).fetchone()
        if image is None:
            row = (image_id, str(path), path.is_file())
            seq = db.execute("INSERT INTO images (id, path, found) VALUES (?, ?, ?)", row).lastrowid
        elif image[1] != str(path):
            self.problems.append(Problem(where, f"image_id {image_id!r} already names {image[1]}"))
            return
        else:
            seq = image[0]
        db.execute(
            "INSERT INTO captions (id, text, image) VALUES (?, ?, ?)", (caption_id, text, seq)
        )

    def finish(self) -> Listing:
        """Drop the images whose file is missing (one problem each, as `drop_missing` words
        it), number the rest and index the captions by image. Returns self."""
        missing = self._db.execute(
            "SELECT i.id, i.path, COUNT(c.seq) FROM images i JOIN captions c ON c.image = i.seq "
            "WHERE NOT i.found GROUP BY i.seq ORDER BY i.seq"
        )
        for image_id, path, n in missing:
            action = f"image {image_id!r} and {n} caption(s) skipped"
            self.problems.append(Problem(path, "image file not found", action))
        self._db.executescript(_FINISH)
        self._db.commit()
        self.n_images = self._count("SELECT COUNT(*) FROM kept")
        self.n_captions = self._count(
            "SELECT COUNT(*) FROM captions c JOIN images i ON i.seq = c.image WHERE i.found"
        )
        self._finished = True
        return self

    def _count(self, sql: str) -> int:
        return int(self._db.execute(sql).fetchone()[0])

    def _query(self, sql: str, *args: object) -> Iterator[tuple]:
        if not self._finished:
            raise RuntimeError(f"listing {self.name!r}: call finish() before reading it")
        return self._db.execute(sql, args)

    def images(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[str, str]]:
        """(id, path) of kept images start..stop-1, in order."""
        stop = self.n_images if stop is None else stop
        return self._query(
            "SELECT i.id, i.path FROM kept k JOIN images i ON i.seq = k.image "
            "WHERE k.rank > ? AND k.rank <= ? ORDER BY k.rank",
            start,
            stop,
        )

    def captions_of(self, start: int, stop: int) -> Iterator[tuple[str, str, str]]:
        """(id, text, image id) of every caption of images start..stop-1, grouped by image in
        image order, each image's captions in row order."""
        return self._query(
            "SELECT c.id, c.text, i.id FROM kept k JOIN images i ON i.seq = k.image "
            "JOIN captions c ON c.image = k.image WHERE k.rank > ? AND k.rank <= ? "
            "ORDER BY k.rank, c.seq",
            start,
            stop,
        )

    def captions(self) -> Iterator[tuple[str, str, str]]:
        """(id, text, image id) of every kept caption, in row order."""
        return self._query(
            "SELECT c.id, c.text, i.id FROM captions c JOIN images i ON i.seq = c.image "
            "WHERE i.found ORDER BY c.seq"
        )

    def fingerprint(self) -> str:
        """`Dataset.fingerprint` of the same rows, computed without loading them."""
        return fingerprint_of(self.images(), ((c, i, t) for c, t, i in self.captions()))

    def to_dataset(self) -> Dataset:
        images = [Image(i, Path(p)) for i, p in self.images()]
        captions = [Caption(c, t, i) for c, t, i in self.captions()]
        return Dataset(self.name, images, captions, list(self.problems))

    def close(self) -> None:
        self._db.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Listing:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
