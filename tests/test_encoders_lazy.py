"""Encoders load their weights on first use: building one, reading its cache fingerprint,
checking a config and working from cached embeddings load nothing; `xmodal search` loads the
text model alone."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from serve_fixtures import served_folders

from xmodal.cli import main
from xmodal.encoders.base import LazyModel, TextEncoder
from xmodal.encoders.registry import build_pair, build_text_encoder
from xmodal.experiments.config import ConfigError, check_inputs, load_config


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The class name of every model whose weights load while the test runs."""
    seen: list[str] = []
    ready = LazyModel.ready

    def recorded(self):
        if not self.loaded:
            seen.append(type(self).__name__)
        return ready(self)

    monkeypatch.setattr(LazyModel, "ready", recorded)
    return seen


class Letters(TextEncoder):
    """Counts its loads; the load is slow, so that concurrent first uses overlap."""

    spec = "letters"

    def __init__(self) -> None:
        self.load_count = 0

    def load(self) -> None:
        time.sleep(0.05)
        self.load_count += 1
        self.dim = 3  # known only once "the model" is there

    def embed_texts(self, texts):
        return np.array([[t.count(c) for c in "abc"] for t in texts], np.float32)


def test_weights_load_once_on_first_use_even_from_many_threads():
    enc = Letters()
    assert not enc.loaded and enc.fingerprint == "text:letters:v1" and enc.load_count == 0
    out: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: out.append(enc.encode_texts(["abc", "cab"])))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert enc.loaded and enc.load_count == 1 and len(out) == 8
    np.testing.assert_array_equal(out[0], [[1, 1, 1], [1, 1, 1]])


def test_dim_known_only_to_the_model_loads_it():
    enc = Letters()
    assert enc.dim == 3 and enc.load_count == 1

    class Forgetful(Letters):
        def load(self) -> None:
            pass

    with pytest.raises(AttributeError, match=r"Forgetful.load\(\) did not set dim"):
        _ = Forgetful().dim


def test_building_the_default_pair_loads_no_model():
    """In a fresh interpreter: spec, fingerprint and the image dim without weights, and no
    model library imported (sentence-transformers loads with the text model only)."""
    code = (
        "import sys\n"
        "from xmodal.encoders.registry import build_pair\n"
        "image, text = build_pair('effnet-lite0', 'minilm', device='cpu')\n"
        "print(image.fingerprint, text.fingerprint, image.dim, image.loaded, text.loaded,\n"
        "      'sentence_transformers' in sys.modules, hasattr(image, 'features'))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    image_fp, text_fp, dim, *flags = run.stdout.split()
    assert image_fp.startswith("image:effnet-lite0:letterbox224-v1:")
    assert text_fp == "text:minilm:v1" and dim == "1280"
    assert flags == ["False"] * 4


def test_the_loaded_pair_embeds_like_a_freshly_built_one(loads):
    image, text = build_pair("effnet-lite0", "minilm", device="cpu")
    assert loads == []
    vec = text.encode_texts(["A red apple."])
    assert loads == ["SentenceTransformerEncoder"] and vec.shape == (1, 384) and text.dim == 384
    again = build_text_encoder("minilm", device="cpu").encode_texts(["A red apple."])
    np.testing.assert_allclose(again, vec, atol=1e-6)
    assert not image.loaded


def test_check_inputs_finds_a_missing_model_path_without_loading(tmp_path, loads):
    (tmp_path / "m.csv").write_text("image,caption\n")
    missing = tmp_path / "models" / "no-such-st-model"
    raw = {
        "name": "bad-path",
        "datasets": [{"source": f"manifest:{tmp_path / 'm.csv'}"}],
        "encoders": [{"image": "effnet-lite0", "text": f"st:{missing}"}],
        "aligners": [{"kind": "identity"}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"encoders\.0\.text: {missing}: no such model"):
        check_inputs(load_config(path), str(path))
    raw["encoders"] = [{"image": "effnet-lite0", "text": "st:"}]  # malformed: an empty part
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"encoders\.0\.text: encoder spec 'st:' has an empty"):
        check_inputs(load_config(path), str(path))
    assert loads == []


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_a_missing_extra_fails_when_the_encoder_is_built(loads):
    with pytest.raises(ImportError, match=r"timm is not installed: pip install 'xmodal\[timm\]'"):
        build_pair("timm:resnet18", "minilm", device="cpu")
    assert loads == []


def test_eval_on_cached_embeddings_and_search_load_only_what_they_need(tmp_path_factory, loads):
    """A real run over Tux Paint stamps (embedded once, by the fixture); then `xmodal eval`
    works from the cache alone, and a text search loads the text model only."""
    run, index = served_folders(tmp_path_factory)
    config = index.parent / "stamps.yaml"
    model = sorted((run / "models").glob("*.safetensors"))[0]
    loads.clear()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["eval", str(config), str(model), "--quiet"]) == 0
    assert loads == [], "eval on cached embeddings loaded a model"
    assert '"t2i_R@1"' in out.getvalue()
    hits = io.StringIO()
    with contextlib.redirect_stdout(hits):
        assert main(["search", str(index), "a red apple", "-k", "3", "--quiet"]) == 0
    assert loads == ["SentenceTransformerEncoder"]
    lines = hits.getvalue().splitlines()
    assert len(lines) == 3 and all(Path(line.split()[-1]).is_file() for line in lines)
