"""Conformance of every aligner: shapes, save/load, determinism, and real learning on synthetic
pairs with a known linear relation between the modalities."""

import numpy as np
import pytest
import torch

from xmodal.align.base import load_aligner
from xmodal.align.registry import build_aligner
from xmodal.embeddings import Embedded
from xmodal.retrieval.evaluate import evaluate
from xmodal.similarity.metrics import Metric

D_IMAGE, D_TEXT = 24, 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matrices: extra threads only add contention on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def linear_pairs(n_images: int, seed: int, captions: int = 2, noise: float = 0.3) -> Embedded:
    """Images ~ N(0, I); each caption = its image @ A + noise, with one fixed A (different dims)."""
    a = np.random.default_rng(123).normal(size=(D_IMAGE, D_TEXT)) / np.sqrt(D_IMAGE)
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, D_IMAGE))
    owner = np.repeat(np.arange(n_images), captions)
    texts = images[owner] @ a + noise * rng.normal(size=(len(owner), D_TEXT))
    return Embedded(images.astype(np.float32), texts.astype(np.float32), owner)


TRAIN, VAL, TEST = linear_pairs(300, 1), linear_pairs(100, 2), linear_pairs(100, 3)

FAST = {"epochs": 4, "batch_size": 64}
#: every kind with small settings: (params, output dim)
KINDS = {
    "identity": ({}, None),
    "center": ({}, None),
    "ridge": ({"alpha": 0.1}, D_IMAGE),
    "ridge-i2t": ({"direction": "image_to_text"}, D_TEXT),
    "procrustes": ({"dim": 8}, 8),
    "cca": ({"dim": 8}, 8),
    "relative": ({"n_anchors": 50, "topk": 10, "seed": 3}, 50),
    "linear": ({"dim": 8, **FAST}, 8),
    "linear-mse": ({"loss": "mse", **FAST}, D_IMAGE),
    "mlp": ({"dim": 8, "hidden": 16, "depth": 2, **FAST}, 8),
    "mlp_scorer": ({"dim": 8, "hidden": 16, "head_depth": 1, "head_hidden": 16, **FAST}, 8),
    "bilinear": ({"dim": 8, "rank": 4, "loss": "hinge", **FAST}, 8),
}
#: kinds that compare the modalities in one space as given
SHARED_SPACE = {"identity", "center"}


def make(name: str):
    """(aligner, train split) for a KINDS entry; shared-space kinds get equal dims."""
    params, _ = KINDS[name]
    train = TRAIN
    if name in SHARED_SPACE:
        train = Embedded(TRAIN.images[:, :D_TEXT], TRAIN.texts, TRAIN.caption_image)
    return build_aligner(name.split("-")[0], **params), train


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fit_transform_shapes_and_dtype(kind):
    aligner, train = make(kind)
    dim = KINDS[kind][1] or train.images.shape[1]
    test = Embedded(TEST.images[:, : train.images.shape[1]], TEST.texts, TEST.caption_image)
    aligner.fit(train)
    images, texts = aligner.transform_images(test.images), aligner.transform_texts(test.texts)
    assert images.dtype == texts.dtype == np.float32
    assert images.shape == (len(test.images), dim) and texts.shape == (len(test.texts), dim)
    scores = aligner.scorer()(texts[:7], images[:5])
    assert scores.shape == (7, 5) and np.isfinite(scores).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_load_round_trip(kind, tmp_path):
    aligner, train = make(kind)
    aligner.metric = Metric.MANHATTAN
    aligner.fit(train)
    aligner.save(tmp_path / "a.safetensors")
    loaded = load_aligner(tmp_path / "a.safetensors")
    assert type(loaded) is type(aligner) and loaded.metric == aligner.metric
    assert loaded.get_params() == aligner.get_params()
    images = TEST.images[:, : train.images.shape[1]]
    for fn, data in (("transform_images", images), ("transform_texts", TEST.texts)):
        np.testing.assert_array_equal(getattr(loaded, fn)(data), getattr(aligner, fn)(data))
    before = aligner.scorer()(aligner.transform_texts(TEST.texts), aligner.transform_images(images))
    after = loaded.scorer()(loaded.transform_texts(TEST.texts), loaded.transform_images(images))
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_same_numbers(kind):
    (first, train), (second, _) = make(kind), make(kind)
    val = Embedded(VAL.images[:, : train.images.shape[1]], VAL.texts, VAL.caption_image)
    first.fit(train, val)
    second.fit(train, val)
    images = TEST.images[:, : train.images.shape[1]]
    np.testing.assert_array_equal(
        first.transform_texts(TEST.texts), second.transform_texts(TEST.texts)
    )
    np.testing.assert_array_equal(first.transform_images(images), second.transform_images(images))


#: (kind, params): aligners that must really learn the linear relation
LEARNERS = [
    ("linear", {"dim": 16, "epochs": 40, "batch_size": 64, "lr": 3e-3}),
    ("linear", {"dim": 16, "epochs": 40, "batch_size": 64, "lr": 3e-3, "loss": "hinge"}),
    ("linear", {"epochs": 40, "batch_size": 64, "lr": 3e-3, "loss": "mse"}),
    ("mlp", {"dim": 16, "hidden": 32, "epochs": 40, "batch_size": 64, "lr": 3e-3}),
    ("mlp_scorer", {"dim": 16, "hidden": 32, "epochs": 40, "batch_size": 64, "lr": 3e-3}),
    ("bilinear", {"dim": 16, "rank": 8, "epochs": 40, "batch_size": 64, "lr": 3e-3}),
    ("ridge", {"alpha": 0.1}),
    ("ridge", {"direction": "image_to_text"}),
    ("cca", {"dim": 16}),
]


@pytest.mark.parametrize(("kind", "params"), LEARNERS, ids=lambda p: str(p)[:40])
def test_learns_a_linear_relation(kind, params):
    aligner = build_aligner(kind, **params).fit(TRAIN, VAL)
    result = evaluate(aligner.transform(TEST), aligner.scorer())
    print(kind, params, {k: result[k] for k in ("t2i_R@1", "i2t_R@1")})
    assert result["t2i_R@1"] >= 80 and result["i2t_R@1"] >= 80
