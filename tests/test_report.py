"""End to end on a real run: `xmodal gap` (real encoders, real aligners, geometry on) on a tiny
manifest of drawn shapes, then `xmodal report`: one self-contained HTML file, rendered by
headless Chromium without errors, every picture decoded. Slow: the shared run loads the real
encoders and measures the gap of every aligned split (about 30-40 s on 2 idle cores)."""

import base64
import contextlib
import html
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_fixtures import write_shapes_manifest
from PIL import Image
from scipy.stats import spearmanr

from xmodal.cli import main

CHROMIUM = Path("/usr/bin/chromium")
ALIGNERS = ("relative", "ridge", "linear")

# Records every error, failed resource and CSP violation, then what the page looked like once
# loaded, as attributes of <body> (read back from --dump-dom). Put before the page's CSP meta.
PROBE = """<script>
window.__errors = [];
addEventListener("error", (e) => __errors.push("error: " + (e.message ||
  (e.target && (e.target.src || e.target.href)))), true);
addEventListener("securitypolicyviolation", (e) =>
  __errors.push("csp: " + e.blockedURI + " " + e.violatedDirective));
const __consoleError = console.error;
console.error = (...a) => { __errors.push("console: " + a.join(" ")); __consoleError(...a); };
addEventListener("load", () => {
  const imgs = [...document.images], b = document.body.dataset;
  b.errors = JSON.stringify(__errors);
  b.images = imgs.length;
  b.broken = imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).length;
  b.tables = document.querySelectorAll("table").length;
  b.rows = document.querySelectorAll("tbody tr").length;
});
</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run folder written by `xmodal gap` plus its report; returns (folder, stdout)."""
    root = tmp_path_factory.mktemp("gap_run")
    write_shapes_manifest(root)
    config = {
        "name": "shapes-gap",
        "datasets": [
            {
                "source": f"manifest:{root / 'shapes.csv'}",
                "split": {"train": 0.5, "val": 0.0, "test": 0.5, "seed": 1},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine", "euclidean"],
        "aligners": [
            {"kind": "relative"},
            {"kind": "ridge", "direction": "image_to_text"},
            {"kind": "linear", "epochs": 5},
        ],
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
    }  # no `geometry: true`: `xmodal gap` turns it on
    (root / "gap.yaml").write_text(yaml.safe_dump(config))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["gap", str(root / "gap.yaml"), "--quiet"]) == 0
        (folder,) = (root / "runs").iterdir()
        assert main(["report", str(folder)]) == 0
    return folder, out.getvalue()


@pytest.mark.slow
def test_gap_study_of_a_real_run_matches_scipy(run):
    folder, stdout = run
    assert yaml.safe_load((folder / "config.yaml").read_text())["geometry"] is True
    summary = json.loads((folder / "results.json").read_text())["summary"]
    assert len(summary) == len(ALIGNERS) * 2
    study = json.loads((folder / "gap.json").read_text())
    assert study["configurations"] == len(summary)
    measures = {c["measure"] for c in study["correlations"]}
    assert {"aligned_cka", "aligned_wasserstein_gaussian", "aligned_cosine_auc"} <= measures
    assert "raw_cka" in study["constant"]  # one encoder pair: raw measures do not vary
    for c in study["correlations"]:
        x = [r[c["measure"]] for r in summary]
        ref = spearmanr(x, [r[c["target"]] for r in summary])
        assert c["n"] == len(summary)
        if np.isfinite(ref.statistic):
            assert c["rho"] == pytest.approx(ref.statistic, abs=1e-12)
            assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        else:  # a constant recall column (6 test images: every R@10 is 100)
            assert c["rho"] is None
    assert "| measure | rho | p | q | n | distinct | reading |" in stdout
    assert (folder / "gap.md").read_text() in stdout
    for paths in study["plots"].values():
        assert all((folder / p).stat().st_size > 1000 for p in paths)


def _images(page):
    return re.findall(r'<img src="([^"]*)"', page)


@pytest.mark.slow
def test_report_is_one_self_contained_file(run):
    folder, stdout = run
    report = folder / "report.html"
    assert f"report: {report}" in stdout
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(link|script|iframe|object)\b|url\(|@import", page)
    assert "default-src 'none'" in page  # the browser refuses anything not inside the file
    sources = _images(page)
    assert len(sources) == 6  # raw PCA, aligned PCA + distances, 2 examples, 1 gap plot
    for src in sources:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and min(im.size) > 100
    for section in ("Results", "Does the gap predict retrieval?", "Retrieval examples"):
        assert f"<h2>{section}</h2>" in page
    for aligner in ALIGNERS:
        assert f"<td>{aligner}</td>" in page
    assert "left out (needs one shared space: images are 1280-d, texts 384-d)" in page
    pngs = sorted(p.stem for p in (folder / "plots").glob("*.png"))
    assert pngs == sorted(p.stem for p in (folder / "plots").glob("*.svg"))
    assert {"pca_raw_effnet-lite0+minilm", "pca_aligned_best", "examples_t2i"} <= set(pngs)


def _chromium(*args):
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _render(page, path):
    """Load `page` (with the probe) in Chromium; the probe's findings as a dict."""
    path.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    body = re.search(r"<body([^>]*)>", _chromium("--dump-dom", path.as_uri()))
    found = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert "errors" in found, "the page's load event never ran"
    return {k: html.unescape(v) for k, v in found.items()}


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium not installed (apt-get install chromium)"
)


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_chromium(run, tmp_path):
    folder, _ = run
    page = (folder / "report.html").read_text(encoding="utf-8")
    seen = _render(page, tmp_path / "probe.html")
    assert json.loads(seen["errors"]) == []
    assert int(seen["images"]) == len(_images(page)) and seen["broken"] == "0"
    assert int(seen["tables"]) >= 4 and int(seen["rows"]) >= 2 * len(ALIGNERS)
    # the probe itself catches what a broken or leaky report would do
    leaky = page.replace(
        "<main>", '<main><img src="https://example.com/x.png"><img src="data:image/png;base64,AA">'
    )
    seen = _render(leaky, tmp_path / "leaky.html")
    assert "csp: https://example.com/x.png img-src" in json.loads(seen["errors"])
    assert seen["broken"] == "2"
    shot = tmp_path / "report.png"
    _chromium("--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}",
              (folder / "report.html").as_uri())  # fmt: skip
    with Image.open(shot) as im:
        assert im.size == (1200, 1600) and len(im.convert("L").getcolors(1 << 16)) > 50


@pytest.mark.slow
def test_report_of_a_run_without_geometry_files(run, tmp_path):
    folder, _ = run
    copy = shutil.copytree(folder, tmp_path / "run", ignore=shutil.ignore_patterns("plots"))
    (copy / "gap.json").unlink()
    for npz in (copy / "embeddings").glob("*.npz"):
        npz.unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text(encoding="utf-8")
    assert "Does the gap predict retrieval?" not in page
    assert "cannot read the saved test split" in page
    assert "<h2>Results</h2>" in page and not _images(page)


def test_key_numbers_show_the_configuration_validation_chooses():
    from xmodal.report.html import chosen_row

    def row(aligner, rsum, **extra):
        return {"dataset": "d", "encoder": "e", "aligner": aligner, "rsum": rsum, **extra}

    summary = [row("a", 300, val_rsum=290), row("b", 310, val_rsum=280)]
    assert chosen_row(summary) == (summary[0], "chosen on validation RSUM")  # not test's pick
    no_val = [row("a", 300), row("b", 310)]
    assert chosen_row(no_val) == (no_val[1], "best test RSUM (no validation split)")
    other_pair = [*summary, {**row("c", 500, val_rsum=999), "dataset": "d2"}]
    assert chosen_row(other_pair)[0]["aligner"] == "a"  # pairs are never compared


@pytest.mark.slow
def test_report_refuses_a_results_file_changed_after_the_run(run, tmp_path, capsys):
    folder, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    results = copy / "results.json"
    results.write_text(results.read_text().replace('"rsum": ', '"rsum": 1', 1))
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "results.json: checksum mismatch" in err and "Traceback" not in err
