"""Recall@K and ranks: hand-built cases with several captions per image, and a brute-force check."""

import numpy as np
import pytest

from xmodal.embeddings import Embedded
from xmodal.retrieval.evaluate import evaluate, image_to_text_ranks, text_to_image_ranks
from xmodal.similarity import Metric, block_scores, reference_scores


def dot(texts, images):
    return texts @ images.T


def test_hand_built_ranks_with_several_captions_per_image():
    images = np.eye(3, dtype=np.float32)
    # captions 0,1 -> image 0; caption 2 -> image 1; captions 3,4 -> image 2
    caption_image = np.array([0, 0, 1, 2, 2])
    texts = np.array(
        [
            [1.0, 0.5, 0.0],  # own image first
            [0.2, 0.9, 0.0],  # image 1 beats own image 0 -> rank 2
            [0.0, 0.1, 0.8],  # image 2 beats own image 1 -> rank 2
            [0.0, 0.0, 0.3],  # rank 1
            [0.9, 0.0, 0.7],  # image 0 beats own image 2 -> rank 2
        ],
        np.float32,
    )
    data = Embedded(images, texts, caption_image)
    assert text_to_image_ranks(data, dot).tolist() == [1, 2, 2, 1, 2]
    # image 0: captions by score 1.0(c0), 0.9(c4), 0.2(c1): own best c0 -> rank 1
    # image 1: 0.9(c1), 0.5(c0), 0.1(c2): own c2 has 2 wrong above -> rank 3
    # image 2: 0.8(c2), 0.7(c4), 0.3(c3): best own c4, one wrong above -> rank 2
    assert image_to_text_ranks(data, dot).tolist() == [1, 3, 2]
    m = evaluate(data, dot, ks=(1, 2))
    assert m["t2i_R@1"] == pytest.approx(40.0)
    assert m["t2i_R@2"] == pytest.approx(100.0)
    assert m["i2t_R@1"] == pytest.approx(100 / 3)
    assert m["i2t_R@2"] == pytest.approx(200 / 3)
    assert m["t2i_MRR"] == pytest.approx(100 * np.mean([1, 0.5, 0.5, 1, 0.5]))  # percent
    assert m["i2t_medr"] == 2.0
    assert m["rsum"] == pytest.approx(40 + 100 + 100 / 3 + 200 / 3)


def test_ties_count_against_the_query():
    images = np.ones((4, 2), np.float32)
    texts = np.ones((4, 2), np.float32)
    m = evaluate(Embedded(images, texts, np.arange(4)), dot, ks=(1,))
    assert m["t2i_R@1"] == 0.0 and m["i2t_R@1"] == 0.0
    assert m["t2i_meanr"] == 4.0


def test_identical_vectors_tie_exactly_whatever_the_rounding():
    # images 0 and 1 share one caption text; image 2 has its own. A scorer that rounds by row
    # position (as BLAS may) must not break the tie between the two identical captions.
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)

    def jittered(t, i):
        return t @ i.T - 1e-7 * np.arange(len(t))[:, None]  # later rows lose a little

    data = Embedded(images, texts, np.arange(3))
    assert image_to_text_ranks(data, jittered).tolist() == [2, 2, 1]
    # duplicated images: the tie between them is exact too, for every caption
    twins = Embedded(images[[0, 0, 2]], images[[0, 2]], np.array([0, 2]))
    assert text_to_image_ranks(twins, lambda t, i: jittered(i, t).T).tolist() == [2, 1]


def test_identical_rows_are_found_even_when_hashes_collide(monkeypatch):
    from xmodal.similarity import ranking as ev

    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    x[4] = x[1]
    assert ev.first_identical(x).tolist() == [0, 1, 2, 3, 1, 5]
    assert ev.first_identical(x[:4]) is None
    # every row hashing alike must not merge different rows
    monkeypatch.setattr(ev, "_row_hashes", lambda rows, step: np.zeros(len(rows), np.uint64))
    assert ev.first_identical(x).tolist() == [0, 1, 2, 3, 1, 5]
    assert ev.first_identical(x[:4]) is None


def _brute_force(texts, images, caption_image, metric):
    s = reference_scores(texts, images, metric)
    t2i = [1 + int(np.sum(np.delete(s[j], c) >= s[j, c])) for j, c in enumerate(caption_image)]
    i2t = []
    for i in range(len(images)):
        mine = caption_image == i
        best = s[mine, i].max()
        i2t.append(1 + int(np.sum(s[~mine, i] >= best)))
    return np.array(t2i), np.array(i2t)


@pytest.mark.parametrize("metric", list(Metric))
def test_matches_brute_force_on_random_data(metric):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(40, 6)).astype(np.float32)
    caption_image = rng.integers(0, 40, size=120)
    caption_image[:40] = np.arange(40)  # every image has a caption
    texts = (images[caption_image] + rng.normal(size=(120, 6))).astype(np.float32)
    data = Embedded(images, texts, caption_image)

    def scorer(q, g):
        return block_scores(q, g, metric)

    t2i, i2t = _brute_force(texts, images, caption_image, metric)
    np.testing.assert_array_equal(text_to_image_ranks(data, scorer), t2i)
    np.testing.assert_array_equal(image_to_text_ranks(data, scorer), i2t)


def test_blocks_give_the_same_ranks(monkeypatch):
    import xmodal.similarity.ranking as ev

    rng = np.random.default_rng(2)
    images = rng.normal(size=(30, 4)).astype(np.float32)
    caption_image = np.repeat(np.arange(30), 3)
    texts = (images[caption_image] + rng.normal(size=(90, 4))).astype(np.float32)
    data = Embedded(images, texts, caption_image)
    full = evaluate(data, dot)
    monkeypatch.setattr(ev, "BLOCK_ELEMENTS", 7 * 90)  # a few rows per block
    assert evaluate(data, dot) == full


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        evaluate(Embedded(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, np.int64)), dot)
