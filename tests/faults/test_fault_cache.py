"""Cache shards that rot, are cut short, or were written without a checksum: each is moved
aside with a warning naming it, its items are embedded again, and the vectors come back right."""

from __future__ import annotations

import numpy as np
import pytest
from damage import TEXTS, Letters, MeanColour, flip_bytes, truncate

from xmodal.files import IntegrityError, sha256_arrays
from xmodal.store import EmbeddingStore
from xmodal.store.cache import read_shard


def _fill(root, shard_size=10):
    store = EmbeddingStore(root, shard_size=shard_size)
    want = store.texts(Letters(), TEXTS)
    shards = sorted(store.folder(Letters().fingerprint).glob("shard-*.npz"))
    assert len(shards) == 4
    return want, shards


def _rewrite(shard, keys, vectors, digest):
    with open(shard, "wb") as f:
        np.savez(f, keys=keys, vectors=vectors, sha256=np.array(digest))


def _forge_bad_vectors(shard):
    """Change one vector and rewrite a well-formed zip: only the checksum can tell."""
    with np.load(shard) as z:
        keys, vectors, digest = z["keys"], z["vectors"].copy(), str(z["sha256"])
    vectors[0, 0] += 1
    _rewrite(shard, keys, vectors, digest)


def _forge_nan(shard):
    """NaN under a checksum that matches it: what a buggy writer would leave."""
    with np.load(shard) as z:
        keys, vectors = z["keys"], z["vectors"].copy()
    vectors[1] = np.nan
    _rewrite(shard, keys, vectors, sha256_arrays({"keys": keys, "vectors": vectors}))


def _legacy(shard):
    with np.load(shard) as z:
        keys, vectors = z["keys"], z["vectors"]
    with open(shard, "wb") as f:
        np.savez(f, keys=keys, vectors=vectors)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (flip_bytes, "unreadable"),  # the zip's CRC catches it
        (truncate, "truncated"),
        (lambda p: truncate(p, keep=0.0), "truncated"),
        (_forge_bad_vectors, "checksum mismatch"),
        (_forge_nan, "NaN"),
        (_legacy, "no sha256 array"),
    ],
)
def test_a_damaged_shard_is_quarantined_reported_and_re_embedded(tmp_path, damage, reason):
    want, shards = _fill(tmp_path)
    damage(shards[1])
    with pytest.raises(IntegrityError, match=reason) as e:  # read on its own, it names the file
        read_shard(shards[1])
    assert e.value.path == shards[1] and str(shards[1]) in str(e.value)
    store, enc = EmbeddingStore(tmp_path, shard_size=10), Letters()
    with pytest.warns(UserWarning, match=rf"corrupt cache shard .*{shards[1].name}"):
        got = store.texts(enc, TEXTS)
    np.testing.assert_array_equal(got, want)
    assert sorted(enc.seen) == sorted(TEXTS[10:20])  # exactly the items of the bad shard
    ((where, why),) = store.unreadable
    assert where == str(shards[1]) and reason in why
    assert not shards[1].exists()
    (aside,) = shards[1].parent.glob(f"{shards[1].name}.corrupt-*")
    assert aside.name in why
    again = Letters()  # and the next run finds everything whole
    np.testing.assert_array_equal(EmbeddingStore(tmp_path).texts(again, TEXTS), want)
    assert again.seen == []


def test_the_run_records_the_shard_as_a_problem(tmp_path):
    from PIL import Image as PILImage

    from xmodal.data.dataset import Caption, Dataset, Image
    from xmodal.experiments.pipeline import embed_dataset

    images = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        PILImage.new("RGB", (4, 4), (i * 50, 0, 0)).save(path)
        images.append(Image(str(i), path))
    ds = Dataset("toy", images, [Caption(str(i), TEXTS[i], str(i)) for i in range(3)])
    store = EmbeddingStore(tmp_path / "cache")
    first = embed_dataset(ds, MeanColour(), Letters(), store, progress=False)
    (shard,) = store.folder(Letters().fingerprint).glob("shard-*.npz")
    truncate(shard)
    with pytest.warns(UserWarning, match="corrupt cache shard"):
        second = embed_dataset(
            ds, MeanColour(), Letters(), EmbeddingStore(tmp_path / "cache"), False
        )
    (problem,) = second.dataset.problems
    assert problem.where == str(shard) and "truncated" in problem.message
    assert "re-embedded" in problem.message
    np.testing.assert_array_equal(second.texts, first.texts)
