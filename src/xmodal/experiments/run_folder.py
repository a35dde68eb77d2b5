"""The run folder: the one place that knows its layout.

    RUN_DIR/
      config.yaml       the resolved config (every default that was used)
      run.json          versions, seeds, timings, counts
      rows.jsonl        one JSON line per finished fit, appended as it finishes (resume reads it)
      folds.jsonl       the same for each cross-validation fold fit (`selection: {folds: k}`)
      results.csv       one row per fit                   \
      results.json      {"runs": rows, "summary": rows}    } written at the end of a run
      results.md        the summary as a Markdown table   /
      findings.md       what the results say, in words
      languages.csv     per-language text -> image scores, one line per fit x language \
      languages.json    the same lines, and the languages left out and why            / (captions
                        in several languages only)
      problems.jsonl    every skipped input and why
      gap.json, gap.md  the gap study (`xmodal gap`)
      cross_model.json  gap measures vs retrieval across encoder pairs (runs of >= 4 pairs)
      models/           one saved aligner per fit
      ranks/            each fit's per-query test ranks (what paired tests compare)
      predictions/      each fit's top-k answers to every test query (Parquet)
      embeddings/       the raw test split of each dataset x encoder pair
      plots/            the pictures of the report and the gap study
      report.html       `xmodal report`

Every reader and writer asks this module for a path; no other module spells a file name of a
run folder. Files written whole are replaced atomically and get a `<file>.sha256` checksum,
verified when read back (a file without one, made by hand or by an older xmodal, is read as is).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmodal.files import (
    CHECKSUM_SUFFIX,
    IntegrityError,
    atomic_write_bytes,
    atomic_write_text,
    sha256_bytes,
    verify_checksum,
    write_checksum,
)

if TYPE_CHECKING:
    from xmodal.retrieval.evaluate import PerQuery

CONFIG = "config.yaml"
RECORD = "run.json"
ROWS = "rows.jsonl"
FOLDS = "folds.jsonl"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FINDINGS = "findings.md"
LANGUAGES_CSV = "languages.csv"
LANGUAGES_JSON = "languages.json"
PROBLEMS = "problems.jsonl"
GAP_JSON = "gap.json"
GAP_MD = "gap.md"
CROSS_MODEL = "cross_model.json"
MODELS = "models"
MODEL_SUFFIX = ".safetensors"
RANKS = "ranks"
PREDICTIONS = "predictions"
EMBEDDINGS = "embeddings"
PLOTS = "plots"
REPORT = "report.html"

#: significant digits of the floats in JSON meant for people (results.json, run.json)
DIGITS = 6


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


class RunFolder:
    """The paths of one run folder, and checked reads and writes of its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunFolder:
        """A new, empty folder `<root>/<name>-<UTC time>[-n]`."""
        root = Path(root)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        folder = root / f"{slug(name)}-{stamp}"
        n = 1
        while folder.exists():
            n += 1
            folder = root / f"{slug(name)}-{stamp}-{n}"
        folder.mkdir(parents=True)
        return cls(folder)

    # the layout
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def record(self) -> Path:
        return self.path / RECORD

    @property
    def rows(self) -> Path:
        return self.path / ROWS

    @property
    def folds(self) -> Path:
        return self.path / FOLDS

    @property
    def results_csv(self) -> Path:
        return self.path / RESULTS_CSV

    @property
    def results_json(self) -> Path:
        return self.path / RESULTS_JSON

    @property
    def results_md(self) -> Path:
        return self.path / RESULTS_MD

    @property
    def findings(self) -> Path:
        return self.path / FINDINGS

    @property
    def languages_csv(self) -> Path:
        return self.path / LANGUAGES_CSV

    @property
    def languages_json(self) -> Path:
        return self.path / LANGUAGES_JSON

    @property
    def problems(self) -> Path:
        return self.path / PROBLEMS

    @property
    def gap_json(self) -> Path:
        return self.path / GAP_JSON

    @property
    def gap_md(self) -> Path:
        return self.path / GAP_MD

    @property
    def cross_model(self) -> Path:
        return self.path / CROSS_MODEL

    @property
    def plots(self) -> Path:
        return self.path / PLOTS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    def model(self, row_id: str) -> str:
        """The model file of a fit, relative to the folder (it also names the row)."""
        return f"{MODELS}/{slug(row_id)}{MODEL_SUFFIX}"

    def ranks(self, model: str) -> Path:
        """Where a fit's per-query test ranks are kept (named after its model file)."""
        return self.path / RANKS / f"{Path(model).stem}.npz"

    def predictions(self, model: str) -> Path:
        """Where a fit's test predictions are kept (named after its model file)."""
        return self.path / PREDICTIONS / f"{Path(model).stem}.parquet"

    def split(self, dataset: str, encoder: str) -> Path:
        """Where the test split of one dataset x encoder pair is kept."""
        return self.path / EMBEDDINGS / f"{slug(dataset)}__{slug(encoder)}.npz"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.path))

    # checked whole-file writes and reads
    def write_text(self, path: Path, text: str) -> None:
        """Replace `path` atomically and record its checksum."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        write_checksum(path)

    def read_text(self, path: Path) -> str:
        """The text of a file of this folder, its checksum verified when it has one."""
        if Path(f"{path}{CHECKSUM_SUFFIX}").exists():
            verify_checksum(path)
        return path.read_text(encoding="utf-8")

    def write_json(self, path: Path, data: Any) -> None:
        self.write_text(path, json.dumps(rounded(data), indent=2, default=float) + "\n")

    def read_json(self, path: Path) -> Any:
        text = self.read_text(path)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise IntegrityError(path, f"not JSON ({e})") from None

    def write_results(
        self, rows: list[dict[str, Any]], summary: list[dict[str, Any]], markdown: str
    ) -> None:
        """results.csv (full precision), results.json (rounded) and results.md."""
        self.write_csv(self.results_csv, rows)
        self.write_json(self.results_json, {"runs": rows, "summary": summary})
        self.write_text(self.results_md, markdown + "\n")

    def write_csv(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Rows as CSV at full precision, one column per key any row has."""
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
        self.write_text(path, out.getvalue())

    def read_ranks(self, model: str) -> PerQuery:
        """A fit's per-query test ranks, checksum verified when it has one."""
        from xmodal.retrieval.evaluate import PerQuery

        path = self.ranks(model)
        if Path(f"{path}{CHECKSUM_SUFFIX}").exists():
            verify_checksum(path)
        return PerQuery.load(path)

    def read_results(self) -> dict[str, Any]:
        """results.json ({"runs": rows, "summary": rows}), checked."""
        path = self.results_json
        try:
            results = self.read_json(path)
        except OSError as e:
            raise ValueError(
                f"{path}: cannot read ({e.strerror or e}); is this a run folder?"
            ) from None
        if not isinstance(results, dict) or not isinstance(results.get("summary"), list):
            raise ValueError(f"{path}: not a results file with a 'summary' list")
        if not results["summary"]:
            raise ValueError(f"{path}: the summary has no rows")
        return results

    # the row log: appended line by line, so that an interrupted run loses at most one line;
    # each line carries the checksum of its row, so a damaged line is found, not reused
    def log_row(self, row: Mapping[str, Any], log: Path | None = None) -> None:
        """Append a row to a row log (default: rows.jsonl)."""
        line = {"row": row, "sha256": _row_digest(row)}
        with open(log or self.rows, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def logged_rows(self, log: Path | None = None) -> list[dict[str, Any]]:
        """Every row of a row log (default: rows.jsonl). A last line cut short by an
        interruption is dropped from the log (its fit runs again); any other damaged line is
        named by file and line."""
        path = log or self.rows
        if not path.exists():
            return []
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            atomic_write_bytes(path, data)
        return [_checked_row(path, n, line) for n, line in enumerate(data.splitlines(), 1)]

    def read_lines(self, path: Path) -> list[dict[str, Any]]:
        """A JSON-lines file of the folder ([] when absent); a bad line is named."""
        if not path.exists():
            return []
        out = []
        for i, line in enumerate(self.read_text(path).splitlines(), 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not a JSON line ({e})") from None
        return out


def _row_digest(row: Mapping[str, Any]) -> str:
    return sha256_bytes(json.dumps(row, sort_keys=True, default=float).encode())


def _checked_row(path: Path, n: int, line: bytes) -> dict[str, Any]:
    """One line of the row log, decoded and checked against its checksum."""
    try:
        logged = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise ValueError(f"{path}:{n}: not a JSON row ({reason}); remove the line") from None
    if not (isinstance(logged, dict) and {"row", "sha256"} <= logged.keys()):
        raise IntegrityError(path, f"line {n} is not a checksummed row; remove the line")
    row: dict[str, Any] = logged["row"]
    if _row_digest(row) != logged["sha256"]:
        raise IntegrityError(path, f"line {n}: checksum mismatch, the row was changed or damaged")
    return row


def rounded(data: Any, digits: int = DIGITS) -> Any:
    """`data` with every finite float cut to `digits` significant digits."""
    if isinstance(data, float):
        return float(f"{data:.{digits}g}") if math.isfinite(data) else data
    if isinstance(data, Mapping):
        return {k: rounded(v, digits) for k, v in data.items()}
    if isinstance(data, Iterable) and not isinstance(data, str | bytes):
        return [rounded(v, digits) for v in data]
    return data
