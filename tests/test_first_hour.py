"""A new user's first hour, as README.md tells it: the `xmodal ...` lines of its bash blocks are
read from the README and run as written (placeholders such as CONFIG or RUN_DIR filled in, the
optional `[...]` parts left out), and what they produce is checked against what the README
says they produce.

The "## Commands" block is walked on a small manifest of drawn shapes with the real encoders
(about 40 s of CPU); `--quiet` is checked in fresh processes, where the model libraries print
as they load (slow: each loads the models); the README's Tux Paint search (ConSE) runs on the
real stamps (slow: it embeds all ~950 of them into an empty cache).
"""

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from data_fixtures import write_shapes_manifest

from xmodal.cli import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
SRC = str(ROOT / "src")

#: README commands not run here, and why
NOT_RUN = {
    "data fetch": "downloads the Debian package; the stamps are already unpacked (XMODAL_DATA)",
    "gap": "needs the geometry measures of every fit: tests/test_report.py runs it",
    "serve": "a server that runs until stopped: tests/test_serve.py starts and queries it",
}


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def readme_commands(title: str, block: int = 0) -> list[str]:
    """The `xmodal ...` lines of one bash block of a README section, comments and optional
    `[...]` parts dropped."""
    text = re.findall(r"```bash\n(.*?)```", _section(title), re.S)[block]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines()]
    return [re.sub(r"\s*\[[^\]]*\]", "", line) for line in lines if line.startswith("xmodal ")]


def _verb(line: str) -> str:
    words = shlex.split(line)[1:]
    return " ".join(words[:2]) if words[0] in ("data", "index") else words[0]


def _xmodal(argv: list[str]) -> tuple[int, str, str]:
    """Run one command in this process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def _run_folder_files() -> list[str]:
    """The files the README's run-folder paragraph says a run folder holds."""
    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("The run folder (") :].split("\n\n")[0]
    names = re.findall(r"`([\w*]+(?:/[\w*]+)?\.[a-z]+)`", paragraph)
    assert {"results.csv", "rows.jsonl", "models/*.safetensors"} <= set(names), names
    assert "test split's embeddings" in paragraph and ".sha256" in paragraph
    return names


def test_help_lists_every_command_of_the_readme():
    done = _subprocess("--help", cwd=ROOT)
    assert done.returncode == 0 and not done.stderr
    listed = re.search(r"\{([a-z,]+)\}", done.stdout).group(1).split(",")
    verbs = {_verb(line).split()[0] for line in readme_commands("Commands")}
    assert verbs <= set(listed), verbs - set(listed)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A user's folder: my_captions.csv (the drawn shapes, and one line naming a missing image)
    and first.yaml, a small config in the README's format."""
    root = tmp_path_factory.mktemp("first_hour")
    write_shapes_manifest(root, extra_lines=("ghost.png,a caption without its image",))
    (root / "shapes.csv").rename(root / "my_captions.csv")
    config = {
        "name": "first",
        "datasets": [
            {
                "source": "manifest:my_captions.csv",
                "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine"],
        "aligners": [{"kind": "ridge"}],
        "ks": [1, 2],
        "cache_dir": "cache",
        "runs_dir": "runs",
    }
    (root / "first.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "elsewhere").mkdir()
    return root


def test_the_commands_section_as_written(home, monkeypatch):
    """Every line of the README's Commands block, in order, with what it says it gives."""
    monkeypatch.chdir(home)
    lines = readme_commands("Commands")
    assert {_verb(line) for line in lines} >= {"run", "report", "index build", "search"}
    fill = {
        "SOURCE": "manifest:my_captions.csv",
        "CONFIG": "first.yaml",
        "NAME": "ridge",
        "COLLECTION": "shapes-index",
        "EMB": "embedded",
        "INDEX": "shard-index",
        "photo.png": str(home / "red_circle.png"),
    }
    folder: Path | None = None
    for line in lines:
        verb = _verb(line)
        if verb in NOT_RUN:
            continue
        if "--jobs" in line:
            continue  # the same grid in worker processes: tests/test_runner.py compares them
        if folder is not None:
            fill["RUNS/NAME-TIME"] = fill["RUN_DIR"] = str(folder)
        argv = shlex.split(line)[1:]
        argv = [fill.get(a, a) for a in argv]
        assert not [a for a in argv if re.fullmatch(r"[A-Z_/-]{3,}", a)], (line, argv)
        if verb == "search":  # results must open from wherever the user stands
            monkeypatch.chdir(home / "elsewhere")
            argv[1:2] = [str(home / argv[1])] if not Path(argv[1]).is_absolute() else argv[1:2]
        code, out, err = _xmodal(argv)
        assert code == 0, (line, err)
        assert "Traceback" not in err
        monkeypatch.chdir(home)
        if verb == "data info":  # "counts and problems of a dataset"
            assert "images: 12  captions: 24" in out and "problems: 1" in out
            assert "ghost.png" in out
        elif verb == "run" and "--resume" not in line:
            assert "| dataset | encoder | aligner | metric | seeds |" in out
            folder = Path(re.search(r"run folder: (\S+)", out).group(1))
            for name in _run_folder_files():
                assert list(folder.glob(name)), f"README promises {name} in the run folder"
            for name in ("results.csv", "results.json", "results.md"):
                assert (folder / f"{name}.sha256").is_file()
            assert list((folder / "embeddings").glob("*.npz"))
            assert "1 input(s) skipped" in out  # ghost.png, also in problems.jsonl
            assert "ghost.png" in (folder / "problems.jsonl").read_text()
        elif verb == "run":  # --resume: "finished fits are reused"
            assert "resume: reusing 1 finished fit(s)" in err and "1 reused" in err
        elif verb == "train":
            assert Path("m.safetensors").is_file() and "saved m.safetensors" in out
        elif verb == "eval":
            assert '"split": "test"' in out and '"rsum"' in out
        elif verb == "report":  # "one self-contained report.html"
            assert out.strip() == f"report: {folder / 'report.html'}"
            page = (folder / "report.html").read_text(encoding="utf-8")
            assert "<h2>Results</h2>" in page and "https://" not in page
            # "what the run warned of (... a test split under 100 images)": 3 test images here
            assert "Read with care" in page and "the test split holds 3 images" in page
        elif verb == "embed":  # sharded embeddings, without a config
            assert (home / "embedded").is_dir()
        elif verb == "index build" and argv[2] == "embedded":  # from the shards, no aligner
            summary = json.loads(out)
            assert Path(summary["source"]) == home / "embedded"
            assert (home / "shard-index").is_dir()
        elif verb == "index build":
            assert out.strip() == "indexed 12 images and 24 captions (hnsw) in shapes-index"
        elif verb == "search" and "--image" in argv:  # image -> captions, 5 by default
            hits = out.strip().splitlines()
            assert len(hits) == 5 and all(h.endswith("]") for h in hits)
        elif verb == "search":  # text -> images, -k of them, paths that open from here
            k = int(argv[argv.index("-k") + 1])
            hits = out.strip().splitlines()
            assert len(hits) == k
            paths = [Path(h.split("  ")[-1]) for h in hits]
            assert all(p.is_absolute() and p.is_file() for p in paths), paths
    assert folder is not None


def test_the_own_data_example_as_written(home, monkeypatch):
    """README "Your own images and captions": `xmodal data info manifest:my_captions.csv`
    gives "counts and every problem found"."""
    monkeypatch.chdir(home)
    line = readme_commands("Your own images and captions")[0]
    assert line == "xmodal data info manifest:my_captions.csv"
    code, out, err = _xmodal(shlex.split(line)[1:])
    assert code == 0 and not err
    assert "images: 12  captions: 24" in out
    assert "problems: 1" in out and "ghost.png: image file not found" in out


@pytest.mark.slow
def test_quiet_prints_only_results(home):
    """README: "`--quiet` prints only results": no progress, no library's weight-loading
    messages, in a fresh process (where the libraries print at import and load)."""
    done = _subprocess("run", "first.yaml", "--quiet", cwd=home)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "| dataset | encoder |" in done.stdout and "run folder: " in done.stdout
    folder = re.search(r"run folder: (\S+)", done.stdout).group(1)
    model = next((home / folder / "models").glob("*.safetensors"))
    argv = ["index", "build", str(home / "first.yaml"), "--aligner", str(model), "--quiet"]
    code, out, err = _xmodal([*argv, "--out", str(home / "q-index")])
    assert code == 0 and err == "", err
    found = _subprocess("search", "q-index", "a red circle", "-k", "2", "--quiet", cwd=home)
    assert found.returncode == 0 and found.stderr == "", found.stderr
    assert len(found.stdout.strip().splitlines()) == 2


@pytest.mark.slow
def test_search_the_tux_paint_stamps_as_the_readme_shows(tmp_path, monkeypatch):
    """The README's ConSE search on the real stamps: train, index, search, as written."""
    data = Path(os.environ.get("XMODAL_DATA") or ROOT / "data").absolute()
    if not (data / "tuxpaint").is_dir():
        pytest.skip("the Tux Paint stamps are not unpacked (xmodal data fetch tuxpaint)")
    monkeypatch.setenv("XMODAL_DATA", str(data))  # the stamps stay where they were fetched
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    conse = readme_commands("Commands", block=1)  # "Search the Tux Paint stamps by text ..."
    assert [_verb(line) for line in conse] == ["train", "index build", "search"]
    for line in conse:
        code, out, err = _xmodal(shlex.split(line)[1:])
        assert code == 0, (line, err)
    said = re.search(r'xmodal search stamps "a red apple"\s+# (.*?), \.\.\.', _section("Commands"))
    promised = said.group(1)
    names = [Path(h.split("  ")[-1]).stem for h in out.strip().splitlines()]
    assert names[: len(promised.split(", "))] == promised.split(", "), names
