"""The benchmarks' goals table: every script's goal rows share one set of columns."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run_all  # noqa: E402
from _common import GOAL_COLUMNS, goal_row, markdown_table  # noqa: E402


def test_goal_rows_have_the_table_columns_and_say_yes_or_no():
    row = goal_row("x within 1.5x of y", "3 s", "y 2 s", 1.5, "<= 1.5", True)
    assert list(row) == GOAL_COLUMNS
    assert row["met"] == "yes" and goal_row("g", "m", "b", 2.0, "<= 1.5", False)["met"] == "no"
    header = markdown_table([row]).splitlines()[0]
    assert header == "| goal | measured | baseline (same run) | ratio | target | met |"


def test_run_all_rejects_a_goal_row_of_another_shape():
    good = goal_row("g", "m", "b", 1.0, ">= 1", True)
    rows = [{"bench": "x", "seconds": 1.0}, good]
    assert run_all.goal_rows(Path("bench_x.py"), rows) == [good]
    with pytest.raises(SystemExit, match=r"bench_x\.py: goal row 'g' has columns"):
        run_all.goal_rows(Path("bench_x.py"), [{"goal": "g", "value": 1.0, "met": True}])


def test_every_bench_script_makes_its_goal_rows_with_goal_row():
    """A script that builds goal dicts by hand would break the one goals table."""
    for script in Path(run_all.HERE).glob("bench_*.py"):
        assert '"goal":' not in script.read_text(), script


def test_topk_goals_without_their_baseline_are_left_out():
    """bench_topk --methods: a goal is reported only when both of its sides were measured."""
    import bench_topk

    xmodal = {(m, "xmodal"): 1.0 for m in ("cosine", "euclidean", "manhattan", "chi_square")}
    rows = bench_topk.scale_goals("case", xmodal, (100.0, "sgemm"), 1e9)
    assert [r["goal"].split(": ")[1] for r in rows] == [
        "exact cosine top-10 at >= 80% of the SGEMM rate",
        "exact euclidean top-10 at >= 80% of the SGEMM rate",
        "chi-square top-10 within 1.5x of Manhattan's time",
    ]
    with_faiss = xmodal | {("cosine", "faiss"): 2.0}
    rows = bench_topk.scale_goals("case", with_faiss, (100.0, "sgemm"), 1e9)
    faiss = [r for r in rows if "FAISS" in r["goal"]]
    assert len(faiss) == 1 and faiss[0]["ratio"] == 2.0 and faiss[0]["met"] == "yes"


SCRIPTS = sorted(
    p.name
    for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
    if not p.name.startswith("_")
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_imports_and_answers_help(script):
    # `make bench` runs them all at the end; an import broken by a change elsewhere would
    # otherwise surface only there
    import subprocess

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    done = subprocess.run(
        [sys.executable, str(bench / script), "--help"], capture_output=True, text=True, cwd=bench
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
