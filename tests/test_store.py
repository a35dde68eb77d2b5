"""The embedding cache: reuse, resume after kill -9, atomic shards, failures not cached."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.encoders.base import ImageEncoder, TextEncoder
from xmodal.store import EmbeddingStore


class CountingText(TextEncoder):
    """A deterministic character-histogram encoder that counts what it is asked to embed."""

    spec = "counting"
    dim = 8
    batch_size = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed_texts(self, texts):
        self.seen += texts
        return np.array([[t.count(c) for c in "abcdefgh"] for t in texts], np.float32)


class MeanColour(ImageEncoder):
    spec = "mean-colour"
    dim = 3

    def preprocess(self, image):
        import torch

        return torch.from_numpy(np.asarray(image, np.float32).copy()).permute(2, 0, 1)

    def embed(self, pixels):
        return pixels.mean(dim=(2, 3))


def test_second_call_reuses_cache_and_dedupes(tmp_path):
    store = EmbeddingStore(tmp_path, shard_size=3)
    enc = CountingText()
    texts = ["abc", "bad", "cafe", "abc", "head", "face", "bead"]
    first = store.texts(enc, texts)
    assert sorted(enc.seen) == sorted(set(texts))  # duplicates embedded once
    np.testing.assert_array_equal(first[0], first[3])
    enc2 = CountingText()
    again = EmbeddingStore(tmp_path, shard_size=3).texts(enc2, texts)
    assert enc2.seen == []
    np.testing.assert_array_equal(first, again)
    extra = EmbeddingStore(tmp_path).texts(enc2, [*texts, "dig"])
    assert enc2.seen == ["dig"]
    assert extra.shape == (8, 8)


def test_changed_preprocessing_does_not_reuse(tmp_path):
    enc = CountingText()
    EmbeddingStore(tmp_path).texts(enc, ["abc"])
    enc2 = CountingText()
    enc2.preprocessing = "v2"
    EmbeddingStore(tmp_path).texts(enc2, ["abc"])
    assert enc2.seen == ["abc"]


def test_an_encoder_with_everything_cached_is_never_loaded(tmp_path):
    """Its vectors come back from the cache at their stored width, though only the model
    knows its dim."""

    class Unloadable(TextEncoder):
        spec = CountingText.spec  # the same cache folder; no dim until a load that fails

        def load(self):
            raise AssertionError("the model was loaded")

        def embed_texts(self, texts):
            raise AssertionError("asked to embed")

    texts = ["abc", "bad", "cafe"]
    first = EmbeddingStore(tmp_path).texts(CountingText(), texts)
    again = EmbeddingStore(tmp_path).texts(Unloadable(), [texts[2], texts[0]])
    np.testing.assert_array_equal(again, first[[2, 0]])
    with pytest.raises(AssertionError, match="the model was loaded"):
        EmbeddingStore(tmp_path).texts(Unloadable(), ["dig"])


def test_bad_images_are_reported_and_not_cached(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(good)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    errors = []
    out = EmbeddingStore(tmp_path / "c").images(
        MeanColour(),
        [good, empty, tmp_path / "missing.png"],
        on_error=lambda i, m: errors.append((i, m)),
    )
    np.testing.assert_allclose(out[0], [255, 0, 0])
    assert np.isnan(out[1:]).all()
    assert [i for i, _ in errors] == [1, 2]
    assert "empty" in errors[0][1] and "missing.png" in errors[1][1]


def test_nan_vectors_are_reported_not_cached(tmp_path):
    class Broken(CountingText):
        def embed_texts(self, texts):
            out = super().embed_texts(texts)
            out[[t == "bad" for t in texts]] = np.nan
            return out

    errors = []
    store = EmbeddingStore(tmp_path)
    store.texts(Broken(), ["abc", "bad"], on_error=lambda i, m: errors.append((i, m)))
    assert errors == [(1, "the encoder produced NaN/inf values")]
    enc = CountingText()
    EmbeddingStore(tmp_path).texts(enc, ["abc", "bad"])
    assert enc.seen == ["bad"]


def test_half_written_shard_is_never_read(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.texts(CountingText(), ["abc"])
    folder = store.folder(CountingText().fingerprint)
    (folder / ".shard-000009-dead.npz.tmp").write_bytes(b"PK\x03\x04 truncated")
    (folder / "shard-000010-bad0.npz").write_bytes(b"not a zip")  # e.g. a damaged disk
    store2 = EmbeddingStore(tmp_path)
    enc = CountingText()
    out = store2.texts(enc, ["abc", "dab"])
    assert enc.seen == ["dab"] and np.isfinite(out).all()
    assert len(store2.unreadable) == 1 and "shard-000010" in store2.unreadable[0][0]


KILLABLE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from xmodal.encoders.base import TextEncoder
    from xmodal.store import EmbeddingStore

    class Slow(TextEncoder):
        spec = "slow"; dim = 4; batch_size = 5
        def embed_texts(self, texts):
            time.sleep(0.05)
            with open(sys.argv[2], "a") as log:
                log.writelines(t + "\\n" for t in texts)
            return np.array([[len(t), t.count("a"), t.count("b"), 1] for t in texts], np.float32)

    texts = [f"caption {i} ab" for i in range(200)]
    out = EmbeddingStore(sys.argv[1], shard_size=10).texts(Slow(), texts)
    np.save(sys.argv[3], out)
    """
)


def test_kill_minus_9_resumes_with_every_item_embedded_once(tmp_path):
    script = tmp_path / "embed.py"
    script.write_text(KILLABLE)
    log, result = tmp_path / "seen.txt", tmp_path / "out.npy"
    args = [sys.executable, str(script), str(tmp_path / "cache"), str(log), str(result)]
    proc = subprocess.Popen(args)
    deadline = time.time() + 60
    while time.time() < deadline:
        shards = list((tmp_path / "cache").rglob("shard-*.npz"))
        if len(shards) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not result.exists(), "the run should have been killed before finishing"
    done_before = {line for line in log.read_text().splitlines()}
    cached_before = len(list((tmp_path / "cache").rglob("shard-*.npz"))) * 10
    subprocess.run(args, check=True)
    seen = log.read_text().splitlines()
    out = np.load(result)
    assert out.shape == (200, 4) and np.isfinite(out).all()
    # the resumed run embedded only what no whole shard held: in all, every item once, plus at
    # most the one batch-chunk that was in flight when the kill came
    assert set(seen) == {f"caption {i} ab" for i in range(200)}
    assert len(seen) - 200 <= len(done_before) - cached_before + 10
    final = EmbeddingStore(tmp_path / "cache")
    keys = []
    for shard in Path(tmp_path / "cache").rglob("shard-*.npz"):
        with np.load(shard) as z:
            keys += z["keys"].tolist()
    assert len(keys) == len(set(keys)) == 200
    assert not final.unreadable


def test_a_read_only_cache_still_serves_what_it_holds(tmp_path, monkeypatch):
    import builtins
    import errno

    import pytest

    from xmodal.store import cache

    want = EmbeddingStore(tmp_path).texts(CountingText(), ["abc", "bad"])
    real_open = builtins.open

    def read_only(path, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache, "open", read_only, raising=False)
    enc = CountingText()
    np.testing.assert_array_equal(EmbeddingStore(tmp_path).texts(enc, ["bad", "abc"]), want[::-1])
    assert enc.seen == []
    with pytest.raises(OSError, match="Read-only") as e:  # something new to cache: named
        EmbeddingStore(tmp_path).texts(enc, ["new"])
    assert "claims" in e.value.filename
