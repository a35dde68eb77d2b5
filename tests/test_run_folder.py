"""The run folder: one module knows its layout; whole files are atomic and checksummed, the row
log survives an interruption, and nothing else in the code spells one of its file names."""

import ast
import json
import math
from pathlib import Path

import pytest

from xmodal.experiments import run_folder
from xmodal.experiments.run_folder import RunFolder, rounded
from xmodal.files import IntegrityError

SRC = Path(__file__).parents[1] / "src" / "xmodal"
LAYOUT = ("CONFIG", "RECORD", "ROWS", "RESULTS_CSV", "RESULTS_JSON", "RESULTS_MD", "FINDINGS")
LAYOUT += ("PROBLEMS", "GAP_JSON", "GAP_MD", "REPORT")
NAMES = [getattr(run_folder, n) for n in LAYOUT]  # file names: not even inside a longer string
FOLDERS = [run_folder.MODELS, run_folder.EMBEDDINGS, run_folder.PLOTS]  # exact, or a path in it


def test_results_round_trip_rounded_and_checked(tmp_path):
    run = RunFolder.create(tmp_path, "my run/1")
    assert run.path.parent == tmp_path and run.path.name.startswith("my_run_1-")
    rows = [{"aligner": "ridge", "rsum": 123.456789012, "r": math.nan}]
    run.write_results(rows, rows, "| table |")
    got = run.read_results()
    assert got["runs"][0]["rsum"] == 123.457 and math.isnan(got["runs"][0]["r"])
    assert "123.456789012" in run.results_csv.read_text()  # the CSV keeps every digit
    assert run.results_md.read_text() == "| table |\n"
    text = run.results_json.read_text()
    run.results_json.write_text(text.replace("123.457", "999.999"))
    with pytest.raises(IntegrityError, match=r"results.json: checksum mismatch"):
        run.read_results()


def test_a_file_without_checksum_is_read_as_is(tmp_path):
    run = RunFolder(tmp_path)
    run.results_json.write_text(json.dumps({"summary": [{"rsum": 1}]}))
    assert run.read_results()["summary"] == [{"rsum": 1}]
    run.results_json.write_text(json.dumps({"summary": []}))
    with pytest.raises(ValueError, match="the summary has no rows"):
        run.read_results()
    with pytest.raises(ValueError, match="is this a run folder"):
        RunFolder(tmp_path / "absent").read_results()


def test_row_log_drops_a_cut_line_and_names_a_damaged_one(tmp_path):
    run = RunFolder(tmp_path)
    run.log_row({"model": "a", "rsum": 1.0})
    run.log_row({"model": "b", "rsum": 2.0})
    with open(run.rows, "a") as f:
        f.write('{"model": "c", "rs')  # the process died mid-line
    assert [r["model"] for r in run.logged_rows()] == ["a", "b"]
    assert run.rows.read_text().endswith("\n")  # the cut line is gone from the log
    run.rows.write_text(run.rows.read_text() + "garbage\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:3: not a JSON row"):
        run.logged_rows()


def test_rounded_keeps_structure():
    assert rounded({"a": [1.23456789, 2], "b": "x", "c": (0.000123456789,)}) == {
        "a": [1.23457, 2],
        "b": "x",
        "c": [0.000123457],
    }


def _string_constants(tree: ast.AST) -> list[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_other_module_spells_a_run_folder_file_name():
    assert {"results.json", "rows.jsonl", "config.yaml", "report.html"} <= set(NAMES)
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "run_folder.py" or path.relative_to(SRC).as_posix() == "shards/format.py":
            continue  # the owners of a layout: the run folder's, and the shard folder's
        for text in _string_constants(ast.parse(path.read_text())):
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in NAMES if n in text]
            offenders += [
                f"{path.relative_to(SRC)}: {n}"
                for n in FOLDERS
                if text == n or text.startswith(f"{n}/")
            ]
    assert not offenders, offenders
