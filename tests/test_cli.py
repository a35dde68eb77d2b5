"""The `xmodal` command: quick to answer, one line per expected failure (never a traceback),
and a log that gets one line per finished step instead of progress-bar redraws."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from data_fixtures import write_shapes_manifest

from xmodal.cli import main

SRC = str(Path(__file__).parents[1] / "src")


def _xmodal(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_help_loads_no_heavy_library():
    code = (
        "import sys, xmodal.cli; xmodal.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'pydantic') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_help_and_argument_errors_answer_at_once():
    _xmodal("--help")  # warm the file cache
    for args, code in ((["--help"], 0), (["run", "--jobs", "two"], 2), (["no-such"], 2)):
        start = time.perf_counter()
        done = _xmodal(*args)
        took = time.perf_counter() - start
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr
        assert took < 2.0, f"{args}: {took:.2f} s"  # 0.1 s idle; a loaded machine is slower


def _config(tmp_path: Path, **extra) -> Path:
    write_shapes_manifest(tmp_path)
    raw = {
        "datasets": [{"source": "manifest:shapes.csv"}],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "aligners": [{"kind": "ridge"}],
        "metrics": ["cosine", "euclidean"],
        "cache_dir": str(tmp_path / "cache"),
        "runs_dir": str(tmp_path / "runs"),
        **extra,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_expected_failures_print_one_line(tmp_path, capsys):
    config = _config(tmp_path)
    cases = [
        (["run", str(config), "--out", "/proc/xmodal-cannot-write-here"], "/proc/xmodal-cannot"),
        (["train", str(config), "--aligner", "nope", "--out", "m"], "have ridge"),
        (["report", str(tmp_path)], "is this a run folder?"),
        (["run", str(tmp_path / "absent.yaml")], "cannot read"),
        (["run"], "give a config to run, or a run folder to resume"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("xmodal: error: ") and words in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_aligner_kind_lists_the_choices(tmp_path, capsys):
    config = _config(tmp_path, aligners=[{"kind": "linearr"}])
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown aligner 'linearr'" in err and "linear" in err and "ridge" in err


@pytest.mark.slow
def test_a_log_gets_one_line_per_step_and_resume_says_what_it_reused(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["run", str(config)]) == 0
    err = capsys.readouterr().err  # not a terminal: no bars
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert any(line.startswith("embedded manifest / effnet-lite0+minilm: ") for line in lines)
    assert any(line.startswith("fit 1/2: ridge / cosine / seed 0") for line in lines)
    assert any(line.startswith("fit 2/2: ridge / euclidean / seed 0") for line in lines)
    assert lines[-1].startswith("done: 2 fit(s), 0 reused")
    (folder,) = (tmp_path / "runs").iterdir()
    warned = json.loads((folder / "run.json").read_text())["warnings"]  # K >= gallery, small split
    assert [line for line in lines if line.startswith("warning: ")] == [
        f"warning: {w}" for w in warned
    ]
    assert len(lines) == 4 + len(warned), lines  # embedded, the warnings, 2 fits, done
    assert main(["run", "--resume", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "resume: reusing 2 finished fit(s)" in err and "done: 2 fit(s), 2 reused" in err
    assert main(["run", "--resume", str(folder), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
