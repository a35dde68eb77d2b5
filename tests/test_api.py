"""The library face of the commands: the README's Python example runs as written (on a tiny
manifest of drawn shapes instead of the demo's Tux Paint), and every command is a documented
function of `xmodal.api`."""

import contextlib
import inspect
import io
import re
from pathlib import Path

import pytest
import yaml
from data_fixtures import write_shapes_manifest

from xmodal import api

README = Path(__file__).parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Library use") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_every_command_is_a_documented_function():
    for name in api.__all__:
        obj = getattr(api, name)
        assert inspect.getdoc(obj), name
    from xmodal.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    known = {"run", "train", "eval", "index", "search", "serve", "gap", "report", "data", "embed"}
    assert set(commands) <= known


def test_readme_example_is_short():
    lines = [line for line in _readme_example().splitlines() if line.strip()]
    assert len(lines) <= 10


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    write_shapes_manifest(tmp_path)
    config = {
        "name": "readme",
        "datasets": [
            {
                "source": "manifest:shapes.csv",  # relative: read beside the config
                "split": {"train": 0.5, "val": 0.2, "test": 0.3, "seed": 1},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine", "euclidean"],
        "aligners": [{"kind": "ridge"}],
        "cache_dir": str(tmp_path / "cache"),
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    code = _readme_example().replace("configs/demo.yaml", str(path))
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    printed = out.getvalue()
    assert "ridge cosine" in printed and "ridge euclidean" in printed
    assert scope["scores"]["rsum"] == pytest.approx(scope["best"]["rsum"], abs=1e-9)
    (report,) = re.findall(r"report: (\S+)", printed)
    assert Path(report).is_file() and Path(report).parent == scope["result"].folder
