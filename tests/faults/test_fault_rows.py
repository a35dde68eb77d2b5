"""The run folder's row log (rows.jsonl), cut short by a kill or damaged on disk: resuming
redoes what was lost and gives the rows of an uninterrupted run, or names the damaged line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from damage import tiny_config

from xmodal.cli import main

pytestmark = pytest.mark.slow
SCORES = ("aligner", "metric", "seed", "t2i_R@1", "i2t_R@1", "t2i_MRR", "i2t_MRR")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rows")
    assert main(["run", str(tiny_config(root, [{"kind": "ridge"}])), "--quiet"]) == 0
    (folder,) = (root / "runs").iterdir()
    return folder


def _scores(folder: Path) -> list[list]:
    runs = json.loads((folder / "results.json").read_text())["runs"]
    return [[row[k] for k in SCORES] for row in runs]


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def test_a_row_cut_short_by_a_kill_is_redone(finished, copy):
    rows = copy / "rows.jsonl"
    text = rows.read_text()
    assert text.count("\n") == 2
    rows.write_text(text[: text.index("\n") + 1 + 25])  # the second row half written
    assert main(["run", "--resume", str(copy), "--quiet"]) == 0
    assert _scores(copy) == _scores(finished)
    assert rows.read_text().count("\n") == 2


def test_a_garbled_row_is_named_by_file_and_line(copy, capsys):
    rows = copy / "rows.jsonl"
    first, second = rows.read_text().splitlines()
    rows.write_text(f"{first}\n{second[:20]}#####{second[25:]}\n")
    assert main(["run", "--resume", str(copy), "--quiet"]) == 2
    assert f"{rows}:2: not a JSON row" in capsys.readouterr().err


def test_a_flipped_byte_in_a_row_is_named(copy, capsys):
    from damage import flip_bytes

    flip_bytes(copy / "rows.jsonl", at=0.3, n=1)
    assert main(["run", "--resume", str(copy), "--quiet"]) == 2
    assert str(copy / "rows.jsonl") in capsys.readouterr().err


def test_an_edited_number_in_a_row_is_caught_by_its_checksum(copy, capsys):
    rows = copy / "rows.jsonl"
    first, second = rows.read_text().splitlines()
    logged = json.loads(second)
    logged["row"]["t2i_R@1"] = 99.0  # valid JSON, a plausible number: only the checksum knows
    rows.write_text(f"{first}\n{json.dumps(logged)}\n")
    assert main(["run", "--resume", str(copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(rows) in err and "line 2: checksum mismatch" in err
