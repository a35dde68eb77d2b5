"""docs/own-data.md as written: its config and its `xmodal ...` lines run, in order, on a
manifest of 60 real Tux Paint stamps (some with a second caption), from the folder that holds
it, and each step leaves what the page says it leaves. Slow: real encoders, ~20 fits."""

import contextlib
import csv
import io
import re
import shlex
from pathlib import Path

import pytest

from xmodal.cli import main

DOC = Path(__file__).parents[1] / "docs" / "own-data.md"


def doc_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def doc_commands() -> list[str]:
    lines = [re.sub(r"\s+#.*$", "", x).strip() for b in doc_blocks("bash") for x in b.splitlines()]
    return [x for x in lines if x.startswith("xmodal ")]


def write_manifest(folder: Path, n: int = 60) -> None:
    from xmodal.data.loaders import load_dataset

    try:
        ds = load_dataset("tuxpaint")
    except FileNotFoundError as e:
        pytest.skip(f"Tux Paint stamps not fetched: {e}")
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        images = [im for im in ds.images if Path(im.path).suffix == ".png"][:n]
        for k, im in enumerate(images):
            caption = next(c.text for c in ds.captions if c.image_id == im.id)
            writer.writerow([str(im.path), caption])
            if k % 2:
                writer.writerow([str(im.path), f"a drawing of {caption.lower()}"])


def test_the_page_shows_a_manifest_a_config_and_the_commands_in_order():
    assert doc_blocks("csv")[0].startswith("image,caption\n")
    verbs = [shlex.split(c)[1] for c in doc_commands()]
    assert verbs == ["data", "run", "report", "train", "index", "search"]


@pytest.mark.slow
def test_the_walkthrough_as_written(tmp_path, monkeypatch):
    write_manifest(tmp_path)
    (tmp_path / "my-study.yaml").write_text(doc_blocks("yaml")[0])
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in doc_commands():
        runs = sorted((tmp_path / "runs").glob("my-study-*"))
        if runs:
            line = line.replace("runs/my-study-TIME", str(runs[-1]))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            args = shlex.split(line)[1:]
            quiet = [] if args[0] in ("data", "report") else ["--quiet"]  # report prints its path
            assert main([*args, *quiet]) == 0, line
        outputs.append(out.getvalue())
    (run,) = (tmp_path / "runs").glob("my-study-*")
    for name in ("results.csv", "findings.md", "problems.jsonl", "config.yaml", "report.html"):
        assert (run / name).is_file(), name
    assert any((run / "models").iterdir()) and any((run / "ranks").iterdir())
    assert "images: 60  captions: 90" in outputs[0]
    assert (tmp_path / "cca.safetensors").is_file()
    hits = outputs[-1].strip().splitlines()
    assert len(hits) == 3 and all(".png" in h for h in hits)
