"""The conse aligner on the real default pair: EfficientNet-Lite0's ImageNet head and MiniLM."""

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.align import conse as conse_module
from xmodal.align.base import FitContext, load_aligner
from xmodal.align.registry import build_aligner
from xmodal.embeddings import Embedded
from xmodal.encoders.base import ClassifierHead, ImageEncoder
from xmodal.encoders.registry import IMAGE, build_image_encoder, build_text_encoder

PAIR = FitContext(image_encoder="effnet-lite0", text_encoder="minilm")


@pytest.fixture(scope="module")
def china(tmp_path_factory):
    """scikit-learn's sample photo of a Chinese temple, as a file."""
    from sklearn.datasets import load_sample_image

    path = tmp_path_factory.mktemp("img") / "china.png"
    Image.fromarray(load_sample_image("china.jpg")).save(path)
    return path


@pytest.fixture(scope="module")
def encoders():
    return build_image_encoder("effnet-lite0", device="cpu"), build_text_encoder("minilm", "cpu")


def fitted(**params) -> conse_module.ConSE:
    rng = np.random.default_rng(0)
    images, texts = rng.random((4, 1280), np.float32), rng.random((4, 384), np.float32)
    train = Embedded(images, texts, np.arange(4))
    return build_aligner("conse", **params).fit(train, PAIR)


def test_head_is_the_classifier_the_features_feed(encoders, china):
    image_encoder, _ = encoders
    head = image_encoder.classifier()
    assert head.weight.shape == (1000, 1280) and head.bias.shape == (1000,)
    assert head.labels[0] == "tench" and len(set(head.labels)) > 990
    vectors = image_encoder.encode_images([china])
    with torch.inference_mode():  # the package's own full forward pass, classifier included
        from xmodal.encoders.default_pair import load_efficientnet_lite0

        pixels = image_encoder.preprocess(Image.open(china).convert("RGB"))[None]
        want = load_efficientnet_lite0()(pixels.float().div(255).sub(0.5).div(0.5)).numpy()
    np.testing.assert_allclose(head.logits(vectors), want, rtol=1e-3, atol=1e-3)
    top5 = [head.labels[i] for i in np.argsort(-want[0])[:5]]
    assert {"bell tower", "stupa", "palace", "pagoda", "monastery"} & set(top5), top5


def test_images_become_the_probability_weighted_class_names(encoders):
    aligner = fitted(top=3, template="a photo of a {}")
    head = encoders[0].classifier()
    x = np.random.default_rng(1).random((5, 1280), dtype=np.float32) * 2
    logits = head.logits(x).astype(np.float64)
    names = [f"a photo of a {label}" for label in head.labels]
    want = []
    for row in logits:
        top = np.argsort(-row)[:3]
        p = np.exp(row[top] - row[top].max())
        v = (p / p.sum()) @ encoders[1].encode_texts([names[i] for i in top])
        want.append(v / np.linalg.norm(v))
    np.testing.assert_allclose(aligner.transform_images(x), np.array(want), atol=1e-5)
    texts = np.ones((2, 384), np.float32)
    np.testing.assert_array_equal(aligner.transform_texts(texts), texts)
    assert aligner.transform_images(x[:0]).shape == (0, 384)


def test_zero_shot_ranks_the_right_caption_first(encoders, china):
    image_encoder, text_encoder = encoders
    aligner = fitted()
    image = aligner.transform_images(image_encoder.encode_images([china]))
    captions = ["A Chinese temple.", "A red bicycle.", "A cat on a sofa.", "A plate of pasta."]
    scores = aligner.scorer()(text_encoder.encode_texts(captions), image)[:, 0]
    assert int(np.argmax(scores)) == 0, scores


def test_loaded_conse_needs_no_encoder(tmp_path, monkeypatch):
    aligner = fitted()
    aligner.save(tmp_path / "c.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("a loaded conse must not build encoders")

    monkeypatch.setattr("xmodal.encoders.registry.build_image_encoder", refuse)
    monkeypatch.setattr("xmodal.encoders.registry.build_text_encoder", refuse)
    loaded = load_aligner(tmp_path / "c.safetensors")
    x = np.random.default_rng(2).random((3, 1280), dtype=np.float32)
    np.testing.assert_array_equal(loaded.transform_images(x), aligner.transform_images(x))
    assert loaded.get_params() == aligner.get_params()
    assert (loaded.image_encoder_, loaded.text_encoder_) == ("effnet-lite0", "minilm")


def test_clear_errors():
    data = Embedded(np.ones((2, 1280), np.float32), np.ones((2, 384), np.float32), np.arange(2))
    with pytest.raises(ValueError, match="needs the specs"):
        build_aligner("conse").fit(data)
    wrong = Embedded(np.ones((2, 512), np.float32), data.texts, data.caption_image)
    with pytest.raises(ValueError, match=r"train.images are 512-d .* give 1280-d"):
        build_aligner("conse").fit(wrong, PAIR)
    with pytest.raises(ValueError, match="template"):
        build_aligner("conse", template="A photo.")
    with pytest.raises(ValueError, match="top"):
        build_aligner("conse", top=0)


class _NoHead(ImageEncoder):
    """An image encoder without a classifier (like a CLIP image tower)."""

    spec, dim = "test-no-head", 1280

    def preprocess(self, image):
        return torch.zeros(3, 2, 2)

    def embed(self, pixels):
        return torch.zeros(len(pixels), self.dim)


def test_encoder_without_classifier_is_refused(monkeypatch):
    monkeypatch.setitem(IMAGE, "test-no-head", lambda device=None: _NoHead())
    data = Embedded(np.ones((2, 1280), np.float32), np.ones((2, 384), np.float32), np.arange(2))
    with pytest.raises(ValueError, match="has no classifier head"):
        context = FitContext(image_encoder="test-no-head", text_encoder="minilm")
        build_aligner("conse").fit(data, context)


def test_classifier_head_checks_its_shapes():
    with pytest.raises(ValueError, match="disagree"):
        ClassifierHead(np.ones((3, 4)), np.ones(2), ["a", "b", "c"])


def test_ensemble_members_get_the_fit_context_and_keep_the_specs(tmp_path):
    rng = np.random.default_rng(0)
    images, texts = rng.random((6, 1280), np.float32), rng.random((6, 384), np.float32)
    members = [{"kind": "conse"}, {"kind": "cca", "dim": 2}]
    ensemble = build_aligner("ensemble", members=members).fit(
        Embedded(images, texts, np.arange(6)), PAIR
    )
    assert ensemble.members_[0].image_encoder_ == "effnet-lite0"
    ensemble.save(tmp_path / "e.safetensors")
    loaded = load_aligner(tmp_path / "e.safetensors")
    assert loaded.members_[0].text_encoder_ == "minilm"
    with pytest.raises(ValueError, match="unknown parameter.*image_encoder"):
        build_aligner("conse", image_encoder="effnet-lite0")
