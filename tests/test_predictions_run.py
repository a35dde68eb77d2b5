"""Predictions of a real run: every Tux Paint stamp, the real encoders (EfficientNet-Lite0 +
all-MiniLM-L6-v2, embeddings cached in the repo's cache/ as `make demo` leaves them), ridge
under cosine and Euclidean, the demo's split. The Parquet files agree with the ranks evaluation
saved, with the full score matrix, and with the saved test split; the real stamps' repeated
captions (identical vectors) tie exactly; the report shows the chosen fit's worst queries."""

import base64
import contextlib
import io
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from xmodal import api
from xmodal.align.base import load_aligner
from xmodal.cli import main
from xmodal.experiments.run_folder import RunFolder
from xmodal.files import IntegrityError
from xmodal.report.figures import load_split
from xmodal.report.worst import SHOWN, THUMB, WORST
from xmodal.retrieval.evaluate import PerQuery
from xmodal.retrieval.predictions import SCHEMA, about, read_predictions

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real `xmodal run` plus its report; returns the run folder."""
    from xmodal.data.loaders import data_root

    if not (data_root() / "tuxpaint").is_dir():
        pytest.skip("the Tux Paint stamps are not unpacked (xmodal data fetch tuxpaint)")
    root = tmp_path_factory.mktemp("predictions_run")
    config = {
        "name": "stamps",
        "datasets": [
            {"source": "tuxpaint", "split": {"train": 0.7, "val": 0.1, "test": 0.2, "seed": 0}}
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine", "euclidean"],
        "aligners": [{"kind": "ridge"}],
        "cache_dir": str(ROOT / "cache"),
        "runs_dir": str(root / "runs"),
    }
    (root / "stamps.yaml").write_text(yaml.safe_dump(config))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(root / "stamps.yaml"), "--quiet"]) == 0
        (folder,) = (root / "runs").iterdir()
        assert main(["report", str(folder)]) == 0
    return folder


def _fits(folder):
    rows = RunFolder(folder).read_results()["runs"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    return rows


def _direction(table, name):
    return table.filter(np.array(table["direction"].to_pylist()) == name).to_pydict()


def test_every_fit_has_predictions_with_the_documented_schema(run):
    split = np.load(RunFolder(run).split("tuxpaint", "effnet-lite0+minilm"))
    for row in _fits(run):
        table = read_predictions(RunFolder(run).predictions(row["model"]))
        assert table.schema.equals(SCHEMA)
        assert table.num_rows == row["n_captions"] + row["n_images"]
        meta = about(table)
        assert meta["k"] == 10 and meta["model"] == row["model"]
        assert meta["split"] == "embeddings/tuxpaint__effnet-lite0+minilm.npz"
        t2i, i2t = _direction(table, "t2i"), _direction(table, "i2t")
        assert all(len(top) == 10 for top in t2i["top_ids"] + i2t["top_ids"])
        # ids resolve to the saved test split: rows, ids, paths and captions agree
        assert t2i["query_id"] == split["caption_ids"].tolist()
        assert i2t["query_id"] == split["image_ids"].tolist()
        for q in range(0, len(t2i["query_id"]), 37):
            assert t2i["top_ids"][q] == split["image_ids"][t2i["top_rows"][q]].tolist()
            own = split["caption_image"][q]
            assert t2i["positive_ids"][q] == [split["image_ids"][own]]
        assert i2t["positives"] == np.bincount(split["caption_image"]).tolist()
        assert all(Path(p).is_file() for p in split["image_paths"])


def test_ranks_are_the_ranks_evaluation_saved_and_the_first_hit_sits_there(run):
    for row in _fits(run):
        table = read_predictions(RunFolder(run).predictions(row["model"]))
        saved = PerQuery.load(RunFolder(run).ranks(row["model"]))
        for name, ranks in (("t2i", saved.t2i), ("i2t", saved.i2t)):
            got = _direction(table, name)
            assert got["first_positive_rank"] == ranks.tolist()
            for rank, top, positives in zip(
                got["first_positive_rank"], got["top_ids"], got["positive_ids"], strict=True
            ):
                hits = [g in positives for g in top]
                assert hits.index(True) + 1 == rank if rank <= 10 else not any(hits)
        assert 100 * np.mean(saved.t2i <= 1) == pytest.approx(row["t2i_R@1"], abs=1e-4)


def test_top_answers_are_the_best_scores_of_the_full_matrix(run):
    for row in _fits(run):
        table = read_predictions(RunFolder(run).predictions(row["model"]))
        split = load_split(run, row["dataset"], row["encoder"])
        aligner = load_aligner(run / row["model"])
        data = aligner.transform(split.data)
        full = aligner.scorer()(data.texts, data.images)  # captions x images, one call
        t2i, i2t = _direction(table, "t2i"), _direction(table, "i2t")
        for scores, got in ((full, t2i), (full.T, i2t)):
            top = np.array(got["top_scores"])
            assert top[:, 0] == pytest.approx(scores.max(1), rel=1e-5, abs=1e-6)
            assert (np.diff(top, axis=1) <= 0).all()  # best first
            unique = (scores == scores.max(1, keepdims=True)).sum(1) == 1
            first = np.array(got["top_rows"])[:, 0]
            assert (first[unique] == scores.argmax(1)[unique]).all()


def test_repeated_real_captions_tie_and_count_against_the_image(run):
    """Tux Paint writes one caption for several stamps ("A fireman." for two firemen): where
    their aligned vectors score exactly alike, an image query meets the other image's caption
    first, and its rank counts it."""
    (row,) = [r for r in _fits(run) if r["metric"] == "cosine"]
    split = load_split(run, row["dataset"], row["encoder"])
    i2t = _direction(read_predictions(RunFolder(run).predictions(row["model"])), "i2t")
    texts = np.array(split.captions)
    ties = 0
    for j in [j for j, t in enumerate(texts) if (texts == t).sum() > 1]:
        image = int(split.data.caption_image[j])
        top, scores = i2t["top_rows"][image], i2t["top_scores"][image]
        for twin in np.flatnonzero(texts == texts[j]):
            if twin != j and {j, twin} <= set(top):
                a, b = top.index(j), top.index(twin)
                if scores[a] == scores[b]:
                    assert b < a  # the wrong caption first
                    assert i2t["first_positive_rank"][image] >= b + 2
                    ties += 1
                else:
                    assert (a < b) == (scores[a] > scores[b])
    assert ties >= 3


def test_the_report_shows_the_chosen_fits_worst_queries_with_thumbnails(run):
    page = (run / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="worst"><h2>Worst queries</h2>(.*?)</section>', page, re.S)
    assert section, "no worst-queries section"
    html_ = section.group(1)
    chosen = api.predictions(run)  # the fit the report shows
    for name, title in (("t2i", "Caption queries"), ("i2t", "Image queries")):
        got = _direction(chosen, name)
        worst = max(got["first_positive_rank"])
        table = re.search(rf"<h3>{title}: the {WORST} worst of (\d+)[^<]*</h3>(.*?)</table>",
                          html_, re.S)  # fmt: skip
        assert table and int(table.group(1)) == len(got["query_id"])
        ranks = [int(r) for r in re.findall(r"<tr><td>(\d+)</td>", table.group(2))]
        assert len(ranks) == WORST and ranks[0] == worst and ranks == sorted(ranks, reverse=True)
        thumbs = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)" class="thumb"',
                            table.group(2))  # fmt: skip
        assert len(thumbs) == WORST * (1 + SHOWN)  # the query's own image or itself, + top 3
        for data in thumbs[:5]:
            with Image.open(io.BytesIO(base64.b64decode(data))) as im:
                assert im.format == "JPEG" and max(im.size) <= THUMB
    t2i = _direction(chosen, "t2i")
    worst_caption = int(np.argmax(t2i["first_positive_rank"]))
    split = load_split(run, "tuxpaint", "effnet-lite0+minilm")
    assert f'<div class="cap">{split.captions[worst_caption]}</div>' in html_.replace("&#x27;", "'")
    assert "image not found" not in html_


def test_api_reads_one_fit_by_its_model_and_refuses_a_changed_file(run, tmp_path):
    rows = _fits(run)
    model = rows[1]["model"]
    by_path = api.predictions(run, model)
    assert by_path.equals(api.predictions(run, Path(model).stem))
    assert about(by_path)["model"] == model
    copy = shutil.copytree(run, tmp_path / "copy")
    target = RunFolder(copy).predictions(model)
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=re.escape(f"{target.name}: checksum mismatch")):
        api.predictions(copy, model)
    with pytest.raises(FileNotFoundError, match="no such predictions file"):
        api.predictions(copy, "no-such-fit")


def test_a_report_without_the_chosen_fits_predictions_says_why(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "old", ignore=shutil.ignore_patterns("predictions"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text(encoding="utf-8")
    assert '<section id="worst">' not in page
    assert re.search(r"worst queries not shown: .*\.parquet: no such predictions file", page)


def test_the_readme_snippet_reads_the_worst_caption_queries(run):
    pytest.importorskip("pandas")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("What a fit retrieved, query by query") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"result": SimpleNamespace(folder=run)})
    lines = out.getvalue().splitlines()
    t2i = _direction(api.predictions(run), "t2i")
    split = load_split(run, "tuxpaint", "effnet-lite0+minilm")
    ranks = np.array(t2i["first_positive_rank"])
    worst = [
        f"{split.captions[q]} -> {split.image_paths[t2i['top_rows'][q][0]]}"
        for q in np.flatnonzero(ranks == ranks.max())
    ]
    assert len(lines) == 5 and lines[0] in worst
