"""Findings are stated from the numbers: metric wins, learned vs cosine, selection by validation,
each comparison backed by a paired test over the same test queries."""

import numpy as np
import pytest

from xmodal.experiments.findings import (
    Evidence,
    findings,
    findings_lines,
    findings_markdown,
    metric_wins,
)
from xmodal.experiments.run_folder import RunFolder
from xmodal.experiments.tables import markdown_table, summarize
from xmodal.retrieval.compare import contributions, paired_difference
from xmodal.retrieval.evaluate import PerQuery
from xmodal.similarity.ranking import scores_from_ranks


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
    ridge = next(r for r in summary if r["aligner"] == "ridge")
    assert ridge["seeds"] == 1 and "rsum_std" not in ridge  # one seed: no spread to show
    table = markdown_table(summary)
    assert "| 250.0 ± n/a |" in table and "± 0.0" not in table
    assert "| 305.0 ± 7.1 |" in table and "std over seeds" in table


def test_metric_wins_counts_each_trained_aligner_once():
    wins, pairs = metric_wins(summarize(ROWS))
    assert (
        len(pairs) == 2
    )  # linear and mlp compare metrics; ridge and mlp_scorer have one metric each
    assert wins == {"cosine": 1, "euclidean": 1}


def test_statements_quote_the_numbers_and_select_on_validation():
    text = " ".join(findings(summarize(ROWS)))
    assert "is not above the best cosine projection, mlp / cosine (RSUM 320.0 ± n/a)" in text
    assert "Best training-free aligner: ridge / cosine (RSUM 250.0" in text
    assert "not tested: no per-query ranks" in text  # no run folder: described, not tested
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
        "(RSUM 361.0 ± 1.4), +18.0; not tested: no per-query ranks."
    ]


def test_findings_never_compare_rows_of_different_datasets():
    other = [{**r, "dataset": "d2", "rsum": r["rsum"] + 100} for r in ROWS]
    lines = findings_lines(summarize(ROWS + other))
    assert lines.count("### d / e") == 1 and lines.count("### d2 / e") == 1
    d_block = lines[lines.index("### d / e") : lines.index("### d2 / e")]
    assert any("Selected on validation RSUM (300.0): ridge / cosine" in s for s in d_block)
    assert not any("350.0" in s for s in d_block)  # d2's ridge RSUM stays in d2's block
    assert findings_lines(summarize(ROWS))[0].startswith("- Best mean test")  # one pair: no header


def _per_query(rng, hit_rate, n_images=150):
    caption_image = np.repeat(np.arange(n_images), 2)
    t2i = np.where(rng.random(len(caption_image)) < hit_rate, 1, rng.integers(2, 50, 2 * n_images))
    i2t = np.where(rng.random(n_images) < hit_rate, 1, rng.integers(2, 50, n_images))
    return PerQuery(t2i, i2t, caption_image)


@pytest.mark.parametrize("column", ["rsum", "t2i_R@5", "i2t_R@1", "t2i_MRR"])
def test_per_image_contributions_sum_to_the_score(column):
    per = _per_query(np.random.default_rng(0), 0.4)
    scores = scores_from_ranks(per.t2i, per.i2t, (1, 5, 10))
    assert contributions(per, column, (1, 5, 10)).sum() == pytest.approx(scores[column])


def test_paired_test_separates_a_real_difference_from_noise():
    rng = np.random.default_rng(1)
    base = _per_query(rng, 0.3)
    same = [_per_query(rng, 0.3) for _ in range(2)]
    better = [_per_query(rng, 0.6) for _ in range(2)]
    real = paired_difference(better, [base], "rsum", (1, 5, 10))
    assert real["difference"] > 0 and real["ci_lo"] > 0 and real["p_value"] < 0.01
    null = paired_difference(same, [base], "t2i_R@1", (1, 5))
    assert null["ci_lo"] <= 0 <= null["ci_hi"] and null["p_value"] > 0.05
    with pytest.raises(ValueError, match="same test queries"):
        paired_difference([_per_query(rng, 0.3, n_images=10)], [base], "rsum", (1,))


def test_findings_quote_the_paired_test_from_the_run_folder(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for aligner, kind, rate in (("linear", "linear", 0.6), ("ridge", "ridge", 0.3)):
        for seed in (0, 1):
            per = _per_query(rng, rate)
            model = f"models/{aligner}_{seed}.safetensors"
            (tmp_path / "ranks").mkdir(exist_ok=True)
            per.save(RunFolder(tmp_path).ranks(model))
            scores = scores_from_ranks(per.t2i, per.i2t, (1, 5))
            rows.append({"dataset": "d", "encoder": "e", "aligner": aligner, "kind": kind,
                         "metric": "cosine", "seed": seed, "model": model,
                         **{k: v for k, v in scores.items() if k != "warnings"}})  # fmt: skip
    text = findings_markdown(summarize(rows), rows, tmp_path)
    line = next(s for s in text.splitlines() if "Best training-free" in s)
    assert "paired difference +" in line and "over 150 test images: beyond the noise" in line
    again = Evidence(rows, tmp_path).compare(summarize(rows)[0], summarize(rows)[0])
    assert "paired difference +0.0" in again and "within the noise" in again
