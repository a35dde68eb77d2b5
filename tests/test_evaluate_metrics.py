"""Evaluation that refuses to flatter: non-finite scores, trivial K, bootstrap CIs, and nDCG /
mAP checked against trec_eval (pytrec_eval)."""

import numpy as np
import pytest
import pytrec_eval

from xmodal.embeddings import Embedded
from xmodal.retrieval.evaluate import NonFiniteScores, evaluate
from xmodal.similarity.ranking import image_to_text_ranks, retrieval_scores


def dot(texts, images):
    return texts @ images.T


def _data(n_images=60, per_image=3, noise=1.0, seed=0, dim=8):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, dim))
    caption_image = np.repeat(np.arange(n_images), per_image)
    texts = images[caption_image] + noise * rng.normal(size=(len(caption_image), dim))
    return Embedded(images, texts, caption_image)


@pytest.mark.parametrize("fn", [evaluate, retrieval_scores])
def test_all_nan_scores_fail_instead_of_scoring_100(fn):
    data = _data()
    with pytest.raises(NonFiniteScores, match=r"text->image.*180 of 180 queries"):
        fn(data, lambda t, i: np.full((len(t), len(i)), np.nan))


def test_partly_nan_scores_fail_and_count_the_queries():
    data = _data()

    def scorer(t, i):
        s = dot(t, i)
        s[:2, 3] = np.nan  # two text queries of the first block
        return s

    with pytest.raises(NonFiniteScores, match="2 of 180") as e:
        evaluate(data, scorer)
    assert e.value.direction == "text->image" and e.value.queries == 2


def test_infinite_scores_fail_in_the_image_direction_too():
    data = _data()
    with pytest.raises(NonFiniteScores, match="text->image"):
        evaluate(data, lambda t, i: np.where(dot(t, i) > 0, np.inf, dot(t, i)))

    def one_inf(t, i):
        s = dot(t, i)
        s[0, 0] = -np.inf
        return s

    with pytest.raises(NonFiniteScores, match="image->text: .* 1 of 60 queries"):
        image_to_text_ranks(data, one_inf)


def test_k_at_or_above_the_gallery_is_flagged_and_left_out_of_rsum():
    data = _data(n_images=20)
    m = evaluate(data, dot, ks=(1, 5, 10**9), bootstrap=0)
    assert m["t2i_R@1000000000"] == 100.0  # true, but says nothing
    assert m["rsum"] == pytest.approx(sum(m[f"{d}_R@{k}"] for d in ("t2i", "i2t") for k in (1, 5)))
    assert any("t2i_R@1000000000" in w and "left out of RSUM" in w for w in m["warnings"])
    assert any("i2t_R@1000000000" in w for w in m["warnings"])
    assert any("small test split (20 images" in w for w in m["warnings"])
    big = evaluate(_data(n_images=120), dot, ks=(1, 5), bootstrap=0)
    assert big["warnings"] == []


def test_bootstrap_intervals_bracket_the_estimate_and_match_the_sampling_error():
    data = _data(n_images=200, noise=2.0, per_image=1)
    m = evaluate(data, dot, ks=(1, 5), seed=3)
    for col in ("t2i_R@1", "i2t_R@5", "t2i_MRR", "i2t_nDCG@10", "t2i_mAP@10", "rsum"):
        assert m[f"{col}_ci_lo"] <= m[col] <= m[f"{col}_ci_hi"], col
    # a proportion p over n queries: the 95% CI is about +-1.96 sqrt(p (1 - p) / n)
    p = m["t2i_R@1"] / 100
    half = 100 * 1.96 * np.sqrt(p * (1 - p) / 200)
    width = (m["t2i_R@1_ci_hi"] - m["t2i_R@1_ci_lo"]) / 2
    assert 0.75 * half < width < 1.25 * half
    assert evaluate(data, dot, ks=(1, 5), seed=3) == m  # seeded
    # RSUM resamples images with their captions: its interval is wider than any one part's
    assert m["rsum_ci_hi"] - m["rsum_ci_lo"] > m["t2i_R@5_ci_hi"] - m["t2i_R@5_ci_lo"]


def test_per_query_ranks_come_back_on_request():
    data = _data()
    m, per = evaluate(data, dot, bootstrap=0, return_ranks=True)
    assert per.t2i.shape == (180,) and per.i2t.shape == (60,)
    assert m["t2i_R@5"] == pytest.approx(100 * np.mean(per.t2i <= 5))
    assert m["i2t_MRR"] == pytest.approx(100 * np.mean(1 / per.i2t))
    np.testing.assert_array_equal(per.caption_image, data.caption_image)


def _trec(scores, relevant, measures):
    """pytrec_eval means of `measures` for a query x document score matrix."""
    qrel = {f"q{q}": {f"d{d}": 1 for d in docs} for q, docs in enumerate(relevant)}
    run = {f"q{q}": {f"d{d}": float(s) for d, s in enumerate(row)} for q, row in enumerate(scores)}
    res = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)
    return {m: 100 * np.mean([r[m] for r in res.values()]) for m in next(iter(res.values()))}


def test_ndcg_and_map_match_trec_eval_both_ways():
    rng = np.random.default_rng(5)
    n_images = 30
    caption_image = rng.integers(0, n_images, 90)
    caption_image[:n_images] = np.arange(n_images)  # 1 to ~8 captions per image
    images = rng.normal(size=(n_images, 6))
    texts = images[caption_image] + 1.3 * rng.normal(size=(90, 6))
    data = Embedded(images, texts, caption_image)
    m = evaluate(data, dot, bootstrap=0)
    scores = dot(texts, images)
    t2i = _trec(scores, [[c] for c in caption_image], {"ndcg_cut_10", "map_cut_10"})
    assert m["t2i_nDCG@10"] == pytest.approx(t2i["ndcg_cut_10"])
    assert m["t2i_mAP@10"] == pytest.approx(t2i["map_cut_10"])
    own = [np.flatnonzero(caption_image == i) for i in range(n_images)]
    i2t = _trec(scores.T, own, {"ndcg_cut_10", "map_cut_10", "recip_rank"})
    assert m["i2t_nDCG@10"] == pytest.approx(i2t["ndcg_cut_10"])
    assert m["i2t_mAP@10"] == pytest.approx(i2t["map_cut_10"])
    assert m["i2t_MRR"] == pytest.approx(i2t["recip_rank"])


def test_ndcg_ties_count_against_the_query():
    data = Embedded(np.ones((3, 2)), np.ones((6, 2)), np.repeat(np.arange(3), 2))
    m = evaluate(data, dot, ks=(1,), bootstrap=0)
    # every image: 4 wrong captions tie with its 2 own, which sit at positions 5 and 6
    ideal = 1 + 1 / np.log2(3)
    assert m["i2t_nDCG@10"] == pytest.approx(100 * (1 / np.log2(6) + 1 / np.log2(7)) / ideal)
    assert m["i2t_mAP@10"] == pytest.approx(100 * (1 / 5 + 2 / 6) / 2)
