"""Saved aligners that rot or are cut short: load_aligner names the file, never returns a
model with wrong numbers."""

from __future__ import annotations

import numpy as np
import pytest
from damage import flip_bytes, truncate

from xmodal.align.base import load_aligner
from xmodal.align.registry import build_aligner
from xmodal.embeddings import Embedded
from xmodal.files import IntegrityError


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((40, 6)).astype(np.float32)
    texts = rng.standard_normal((40, 5)).astype(np.float32)
    aligner = build_aligner("ridge").fit(Embedded(images, texts, np.arange(40)))
    aligner.save(tmp_path / "ridge.safetensors")
    return tmp_path / "ridge.safetensors"


def test_a_whole_aligner_loads(saved):
    assert load_aligner(saved).kind == "ridge"


@pytest.mark.parametrize("damage", [lambda p: flip_bytes(p, at=0.9), truncate])
def test_a_damaged_aligner_file_is_named(saved, damage):
    damage(saved)
    with pytest.raises(IntegrityError) as e:
        load_aligner(saved)
    assert e.value.path == saved and str(saved) in str(e.value)


def test_a_changed_header_parameter_is_named(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw.replace(b'\\"alpha\\": 1.0', b'\\"alpha\\": 2.0', 1))
    assert saved.read_bytes() != raw  # one digit of the header changed, as a bit flip would
    with pytest.raises(IntegrityError) as e:
        load_aligner(saved)
    assert e.value.path == saved
