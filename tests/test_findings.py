"""Findings are stated from the numbers: metric wins, learned vs cosine, selection by validation."""

from xmodal.experiments.findings import findings, findings_lines, findings_markdown, metric_wins
from xmodal.experiments.tables import summarize


def _row(aligner, kind, metric, seed, rsum, val_rsum):
    return {
        "dataset": "d",
        "encoder": "e",
        "aligner": aligner,
        "kind": kind,
        "loss": "",
        "metric": metric,
        "seed": seed,
        "t2i_R@1": rsum / 10,
        "i2t_R@1": rsum / 12,
        "rsum": rsum,
        "val_rsum": val_rsum,
        "model": f"m{seed}",
    }


ROWS = [
    _row("linear", "linear", "cosine", 0, 300, 280),
    _row("linear", "linear", "cosine", 1, 310, 290),
    _row("linear", "linear", "manhattan", 0, 200, 190),
    _row("linear", "linear", "manhattan", 1, 210, 200),
    _row("mlp", "mlp", "cosine", 0, 320, 270),
    _row("mlp", "mlp", "euclidean", 0, 330, 260),
    _row("mlp_scorer", "mlp_scorer", "cosine", 0, 150, 150),
    _row("ridge", "ridge", "cosine", 0, 250, 300),
]


def test_summary_keeps_group_labels_and_spreads():
    summary = summarize(ROWS)
    lin = next(r for r in summary if r["aligner"] == "linear" and r["metric"] == "cosine")
    assert lin["kind"] == "linear" and lin["seeds"] == 2
    assert lin["rsum"] == 305 and round(lin["rsum_std"], 4) == 7.0711
    assert "model" not in lin


def test_metric_wins_counts_each_trained_aligner_once():
    wins, n = metric_wins(summarize(ROWS))
    assert n == 2  # linear and mlp compare metrics; ridge and mlp_scorer have one metric each
    assert wins == {"cosine": 1, "euclidean": 1}


def test_statements_quote_the_numbers_and_select_on_validation():
    text = " ".join(findings(summarize(ROWS)))
    assert "does not beat the best cosine projection, mlp / cosine (RSUM 320.0" in text
    assert "Best training-free aligner: ridge / cosine (RSUM 250.0" in text
    # ridge has the best validation RSUM although its test RSUM is lower: validation decides
    assert "Selected on validation RSUM (300.0): ridge / cosine" in text
    assert findings_markdown(summarize(ROWS)).count("\n| d | e |") == 6


def test_grid_effects_compare_the_settings_of_one_grid():
    rows = [
        _row("fusion[csls=0]", "ensemble", "cosine", 0, 360, 360),
        _row("fusion[csls=0]", "ensemble", "cosine", 1, 362, 360),
        _row("fusion[csls=10]", "ensemble", "cosine", 0, 380, 370),
        _row("fusion[csls=10]", "ensemble", "cosine", 1, 378, 370),
        _row("fusion[csls=10]", "ensemble", "euclidean", 0, 500, 370),  # other metric: ignored
        _row("lonely[x=1]", "ensemble", "cosine", 0, 100, 100),  # one setting: nothing to say
    ]
    text = [s for s in findings(summarize(rows)) if s.startswith("Grid")]
    assert text == [
        "Grid fusion / cosine: best csls=10 (RSUM 379.0 ± 1.4), worst csls=0 "
        "(RSUM 361.0 ± 1.4), +18.0."
    ]


def test_findings_never_compare_rows_of_different_datasets():
    other = [{**r, "dataset": "d2", "rsum": r["rsum"] + 100} for r in ROWS]
    lines = findings_lines(summarize(ROWS + other))
    assert lines.count("### d / e") == 1 and lines.count("### d2 / e") == 1
    d_block = lines[lines.index("### d / e") : lines.index("### d2 / e")]
    assert any("Selected on validation RSUM (300.0): ridge / cosine" in s for s in d_block)
    assert not any("350.0" in s for s in d_block)  # d2's ridge RSUM stays in d2's block
    assert findings_lines(summarize(ROWS))[0].startswith("- Best metric")  # one pair: no header
