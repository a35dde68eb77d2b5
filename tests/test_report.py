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
from xmodal.report.gap import units

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
    assert study["configurations"] == len(summary) and study["units"] == len(ALIGNERS)
    measures = {c["measure"] for c in study["correlations"]}
    assert {"aligned_cka", "aligned_wasserstein_gaussian", "aligned_cosine_auc"} <= measures
    assert "raw_cka" in study["constant"]  # one encoder pair: raw measures do not vary
    aligners = units(summary)  # one unit per aligner: its metrics averaged
    for c in study["correlations"]:
        x = [u[c["measure"]] for u in aligners]
        ref = spearmanr(x, [u[c["target"]] for u in aligners])
        assert c["n"] == len(ALIGNERS)
        if np.isfinite(ref.statistic):
            assert c["rho"] == pytest.approx(ref.statistic, abs=1e-12)
            assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        else:  # a constant recall column
            assert c["rho"] is None
    assert "| measure | rho | p | q | n | reading |" in stdout
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
    sources = re.findall(r'<figure[^>]*><img src="([^"]*)"', page)
    assert len(sources) == 6  # raw PCA, aligned PCA + distances, 2 examples, 1 gap plot
    thumbnails = [s for s in _images(page) if s not in sources]  # the worst queries'
    assert thumbnails and all(s.startswith("data:image/jpeg;base64,") for s in thumbnails)
    for src in sources:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and min(im.size) > 100
    for section in (
        "Results",
        "Does the gap predict retrieval?",
        "Retrieval examples",
        "Worst queries",
    ):
        assert f"<h2>{section}</h2>" in page
    for aligner in ALIGNERS:
        assert f"<td>{aligner}</td>" in page
    assert "left out (needs one shared space: images are 1280-d, texts 384-d)" in page
    pngs = sorted(p.stem for p in (folder / "plots").glob("*.png"))
    charts = [p for p in pngs if not p.startswith("examples_")]  # examples are photographs
    assert charts == sorted(p.stem for p in (folder / "plots").glob("*.svg"))
    assert {"pca_raw_effnet-lite0+minilm", "pca_aligned_best", "examples_t2i"} <= set(pngs)
    assert (
        "(PNG: plots/examples_t2i.png)" in page
        and "(PNG and SVG: plots/pca_aligned_best.*)" in page
    )


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


@pytest.mark.slow
def test_report_names_a_test_split_changed_after_the_run(run, tmp_path):
    folder, _ = run
    copy = shutil.copytree(folder, tmp_path / "run", ignore=shutil.ignore_patterns("plots"))
    (split,) = (copy / "embeddings").glob("*.npz")
    assert Path(f"{split}.sha256").is_file()
    data = bytearray(split.read_bytes())
    data[len(data) // 2] ^= 0xFF
    split.write_bytes(bytes(data))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text(encoding="utf-8")
    assert "cannot read the saved test split" in page and "checksum mismatch" in page


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


# --- what a first reader needs: the choice, its validation score, failures, small samples ----
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A real `xmodal run` without geometry on the drawn shapes: ks [5, 10], a validation split,
    ridge on one seed, linear on two, and a linear fit with a learning rate that diverges (its
    rows say `failed: ...`). Returns the run folder, with its report written."""
    root = tmp_path_factory.mktemp("small_run")
    write_shapes_manifest(root)
    config = {
        "name": "small",
        "datasets": [
            {
                "source": f"manifest:{root / 'shapes.csv'}",
                "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 3},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine"],
        "ks": [5, 10],
        "aligners": [
            {"kind": "ridge", "seeds": [0]},
            {"kind": "linear", "epochs": 4, "seeds": [0, 1]},
            {"kind": "linear", "name": "diverging", "lr": 1e6, "epochs": 10, "seeds": [0]},
        ],
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
    }
    (root / "small.yaml").write_text(yaml.safe_dump(config))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(root / "small.yaml"), "--quiet"]) == 0
        (folder,) = (root / "runs").iterdir()
        assert main(["report", str(folder)]) == 0
    return folder


def _text(page):
    """The page's words: tags and pictures dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]*"', "", page)))


@pytest.mark.slow
def test_report_shows_the_validation_score_that_chose_the_row(small_run):
    page = (small_run / "report.html").read_text(encoding="utf-8")
    summary = json.loads((small_run / "results.json").read_text())["summary"]
    scored = [r for r in summary if np.isfinite(r.get("val_rsum", np.nan))]
    chosen = max(scored, key=lambda r: r["val_rsum"])
    assert "validation RSUM" in page
    assert f'<div class="v">{chosen["val_rsum"]:.1f}</div>' in page
    (marked,) = re.findall(r"<tr><td>([^<]*) <span class=\"chosen\">◀ chosen</span>", page)
    assert marked == chosen["aligner"]
    assert "val RSUM" in page  # the column the choice was made on


@pytest.mark.slow
def test_failed_fits_are_listed_never_scored(small_run):
    rows = json.loads((small_run / "results.json").read_text())["runs"]
    (failed,) = [r for r in rows if r["aligner"] == "diverging"]
    assert failed["status"].startswith("failed: ") and np.isnan(failed["rsum"])
    page = (small_run / "report.html").read_text(encoding="utf-8")
    text = _text(page)
    assert "failed (1 of 1 seeds)" in text
    assert "1 failed fit(s)" in text and failed["status"] in text
    assert not re.search(r'<td class="n">[^<]*nan', page, re.I)  # no NaN printed as a score
    assert "diverging ◀ chosen" not in text


@pytest.mark.slow
def test_a_run_without_geometry_shows_no_empty_geometry_section(small_run):
    page = (small_run / "report.html").read_text(encoding="utf-8")
    assert "Geometry of the modality gap" not in page and "Does the gap predict" not in page
    views = re.search(r'<section id="geometry"><h2>Embedding views</h2>(.*?)</section>', page)
    assert views and views.group(1).startswith("<details><summary>")  # folded away
    assert "<table" not in views.group(1)  # no empty measure tables


@pytest.mark.slow
def test_columns_follow_ks_and_mrr_says_its_unit(small_run):
    page = (small_run / "report.html").read_text(encoding="utf-8")
    headers = [
        html.unescape(h.replace("<wbr>", "")) for h in re.findall(r"<th[^>]*>(.*?)</th>", page)
    ]
    for column in ("t2i_R@5", "t2i_R@10", "i2t_R@5", "i2t_R@10", "t2i_MRR %", "i2t_MRR %"):
        assert column in headers, column
    assert "t2i_R@1" not in headers
    assert "R@K and MRR (mean reciprocal rank) in percent" in page
    rows = json.loads((small_run / "results.json").read_text())["runs"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["t2i_R@5"] <= r["t2i_MRR"] * 5 + 1e-9 for r in ok)  # MRR on R@K's scale


@pytest.mark.slow
def test_small_samples_say_so(small_run):
    page = (small_run / "report.html").read_text(encoding="utf-8")
    text = _text(page)
    ridge = re.search(r"<tr><td>ridge[^<]*(?:<span[^>]*>[^<]*</span>)?</td>(.*?)</tr>", page)
    assert ridge and "± n/a" in ridge.group(1) and "± 0.0" not in ridge.group(1)  # one seed
    warnings = json.loads((small_run / "run.json").read_text())["warnings"]
    assert any("test gallery holds" in w for w in warnings)  # 3 test images, ks 5 and 10
    assert any("the test split holds 3 images" in w for w in warnings)
    box = re.search(r'<div class="warn"><b>Read with care</b>(.*?)</div>', page)
    assert box and all(html.escape(w) in box.group(1) for w in warnings)
    assert text.index("Read with care") < text.index("Results")


@pytest.mark.slow
def test_every_picture_says_what_its_colours_mean(small_run, run):
    for folder in (small_run, run[0]):
        page = (folder / "report.html").read_text(encoding="utf-8")
        captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
        assert captions and all("<i>Colours:</i> " in c for c in captions)
    gap_page = (run[0] / "report.html").read_text(encoding="utf-8")
    assert "Cell colour: red behind a positive ρ" in gap_page
