"""Conformance of every aligner: shapes, save/load, determinism, and real learning on synthetic
pairs with a known linear relation between the modalities."""

import numpy as np
import pytest
import torch

from xmodal.align.base import FitContext, load_aligner
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
    "relative": ({"n_anchors": 50, "topk": 10}, 50),
    "linear": ({"dim": 8, **FAST}, 8),
    "linear-mse": ({"loss": "mse", **FAST}, D_IMAGE),
    "mlp": ({"dim": 8, "hidden": 16, "depth": 2, **FAST}, 8),
    "mlp_scorer": ({"dim": 8, "hidden": 16, "head_depth": 1, "head_hidden": 16, **FAST}, 8),
    "bilinear": ({"dim": 8, "rank": 4, "loss": "hinge", **FAST}, 8),
    "ensemble": (
        {"members": [{"kind": "cca", "dim": 8}, {"kind": "linear", "dim": 8, **FAST}]},
        16,
    ),
    "ensemble-csls": (  # fused vectors plus the CSLS column
        {"members": [{"kind": "cca", "dim": 8}, {"kind": "ridge", "weight": 2}], "csls": 5},
        8 + D_IMAGE + 1,
    ),
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


@pytest.mark.parametrize("kind", ["ridge", "linear"])
def test_saved_metric_and_params_come_back(kind, tmp_path):
    params = {"alpha": 0.3, "direction": "image_to_text"} if kind == "ridge" else FAST
    aligner = build_aligner(kind, metric="chi_square", **params).fit(TRAIN)
    aligner.save(tmp_path / "a.safetensors")
    loaded = load_aligner(tmp_path / "a.safetensors")
    assert loaded.metric is Metric.CHI_SQUARE and loaded.get_params() == aligner.get_params()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_same_numbers(kind):
    (first, train), (second, _) = make(kind), make(kind)
    val = Embedded(VAL.images[:, : train.images.shape[1]], VAL.texts, VAL.caption_image)
    first.fit(train, FitContext(seed=3, val=val))
    second.fit(train, FitContext(seed=3, val=val))
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
    aligner = build_aligner(kind, **params).fit(TRAIN, FitContext(val=VAL))
    result = evaluate(aligner.transform(TEST), aligner.scorer())
    print(kind, params, {k: result[k] for k in ("t2i_R@1", "i2t_R@1")})
    assert result["t2i_R@1"] >= 80 and result["i2t_R@1"] >= 80


def test_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge as SkRidge

    aligner = build_aligner("ridge", alpha=0.5).fit(TRAIN)
    x = TRAIN.texts.astype(np.float64)
    xc = x - x.mean(0)
    penalty = 0.5 * np.trace(xc.T @ xc) / x.shape[1]  # alpha is relative to the mean variance
    sk = SkRidge(alpha=penalty).fit(x, TRAIN.paired_images)
    want = sk.predict(TEST.texts) - TRAIN.paired_images.mean(0)  # our image side is centred
    np.testing.assert_allclose(aligner.transform_texts(TEST.texts), want, atol=1e-4)


def test_cca_whitens_and_correlates_canonically():
    aligner = build_aligner("cca", dim=6, reg=0.0, power=0.0).fit(TRAIN)
    t = aligner.transform_texts(TRAIN.texts).astype(np.float64)
    i = aligner.transform_images(TRAIN.paired_images).astype(np.float64)
    n = len(t)
    np.testing.assert_allclose(t.T @ t / n, np.eye(6), atol=1e-4)
    np.testing.assert_allclose(i.T @ i / n, np.eye(6), atol=1e-4)
    np.testing.assert_allclose(t.T @ i / n, np.diag(aligner.correlations_), atol=1e-4)
    assert np.all(np.diff(aligner.correlations_) <= 0) and aligner.correlations_[0] > 0.9


def test_center_removes_each_mean():
    shared = Embedded(TRAIN.images[:, :D_TEXT], TRAIN.texts, TRAIN.caption_image)
    aligner = build_aligner("center").fit(shared)
    np.testing.assert_allclose(aligner.transform_images(shared.images).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(aligner.transform_texts(shared.texts).mean(0), 0, atol=1e-5)
    with pytest.raises(ValueError, match="16-d"):
        build_aligner("center").fit(TRAIN)


def test_relative_anchor_is_most_similar_to_itself():
    aligner = build_aligner("relative", n_anchors=30).fit(TRAIN, FitContext(seed=1))
    rows = np.sort(np.random.default_rng(1).choice(len(TRAIN.texts), 30, replace=False))
    texts = aligner.transform_texts(TRAIN.texts[rows])
    images = aligner.transform_images(TRAIN.images[TRAIN.caption_image[rows]])
    np.testing.assert_allclose(np.diag(texts), 1, atol=1e-5)
    np.testing.assert_allclose(np.diag(images), 1, atol=1e-5)
    sparse = build_aligner("relative", n_anchors=30, topk=5).fit(TRAIN)
    assert ((sparse.transform_texts(TEST.texts) != 0).sum(1) == 5).all()


def test_ensemble_scores_do_not_depend_on_blocking():
    aligner, train = make("ensemble")
    aligner.fit(train)
    data = aligner.transform(TRAIN)
    full = aligner.scorer()(data.texts, data.images)
    halves = np.concatenate(
        [
            aligner.scorer()(data.texts[:7], data.images),
            aligner.scorer()(data.texts[7:], data.images),
        ]
    )
    np.testing.assert_allclose(full, halves, rtol=1e-5, atol=1e-5)


def test_ensemble_fuses_its_members_standardised_scores():
    aligner, train = make("ensemble")
    aligner.fit(train)
    data = aligner.transform(TRAIN)
    fused = aligner.scorer()(data.texts, data.images)
    expect = 0
    for member, (mean, std) in zip(aligner.members_, aligner.scales_, strict=True):
        part = member.transform(TRAIN)
        expect = expect + (member.scorer()(part.texts, part.images) - mean) / std
    np.testing.assert_allclose(fused, expect / 2, rtol=1e-5, atol=1e-5)


def test_ensemble_weights_members():
    members = [{"kind": "cca", "dim": 8, "weight": 3}, {"kind": "ridge", "weight": 1}]
    aligner = build_aligner("ensemble", members=members).fit(TRAIN)
    data = aligner.transform(TEST)
    fused = aligner.scorer()(data.texts, data.images)
    parts = []
    for member, (mean, std) in zip(aligner.members_, aligner.scales_, strict=True):
        part = member.transform(TEST)
        parts.append((member.scorer()(part.texts, part.images) - mean) / std)
    np.testing.assert_allclose(fused, (3 * parts[0] + parts[1]) / 4, rtol=1e-5, atol=1e-5)


def test_csls_subtracts_mean_scores_of_nearest_training_items():
    plain = build_aligner("ensemble", members=[{"kind": "cca", "dim": 8}]).fit(TRAIN)
    csls = build_aligner("ensemble", members=[{"kind": "cca", "dim": 8}], csls=7).fit(TRAIN)
    p, c = plain.transform(TEST), csls.transform(TEST)
    s = plain.scorer()(p.texts, p.images).astype(np.float64)
    bank_t, bank_i = plain.transform_texts(TRAIN.texts), plain.transform_images(TRAIN.images)
    r_image = np.sort(plain.scorer()(bank_t, p.images), axis=0)[-7:].mean(0)
    r_text = np.sort(plain.scorer()(p.texts, bank_i), axis=1)[:, -7:].mean(1)
    want = s - 0.5 * (r_text[:, None] + r_image[None, :])
    np.testing.assert_allclose(csls.scorer()(c.texts, c.images), want, rtol=1e-4, atol=1e-4)
    # blocks of queries score the same as the whole
    halves = [csls.scorer()(c.texts[:9], c.images), csls.scorer()(c.texts[9:], c.images)]
    np.testing.assert_allclose(np.concatenate(halves), want, rtol=1e-4, atol=1e-4)


def test_csls_reduces_hubness_on_a_hub():
    # 12 images on the axes and a hub image along the diagonal that every caption leans to:
    # plain cosine puts the hub first for every caption, CSLS discounts it
    hub = np.full((1, D_IMAGE), 1 / np.sqrt(D_IMAGE), np.float32)
    images = np.concatenate([np.eye(D_IMAGE, dtype=np.float32)[:12], hub])
    data = Embedded(images, images[:12] + 1.5 * hub, np.arange(12))
    shared = [{"kind": "identity"}]
    plain = build_aligner("ensemble", members=shared).fit(data)
    fixed = build_aligner("ensemble", members=shared, csls=3).fit(data)
    assert evaluate(plain.transform(data), plain.scorer())["t2i_R@1"] == 0
    assert evaluate(fixed.transform(data), fixed.scorer())["t2i_R@1"] == 100


def test_ensemble_rejects_bad_members():
    with pytest.raises(ValueError, match="needs `members`"):
        build_aligner("ensemble")
    with pytest.raises(ValueError, match="other than ensemble"):
        build_aligner("ensemble", members=[{"kind": "ensemble"}])
    with pytest.raises(ValueError, match="weight must be a positive"):
        build_aligner("ensemble", members=[{"kind": "ridge", "weight": 0}])
    with pytest.raises(ValueError, match="neighbour count"):
        build_aligner("ensemble", members=[{"kind": "ridge"}], csls=-1)
