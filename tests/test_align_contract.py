"""The aligner contract: parameters from the constructor (none lost on save/load, for every
registered kind), the explicit fit context, fits that fail loudly instead of flattering, and
saved files that are verified on load."""

import json
import os
import stat

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from test_align import TEST, TRAIN, VAL

from xmodal.align.base import Aligner, FitContext, FitDiverged, load_aligner
from xmodal.align.registry import ALIGNERS, aligner_traits, build_aligner
from xmodal.embeddings import Embedded
from xmodal.files import IntegrityError
from xmodal.similarity.metrics import Metric

FAST = {"epochs": 3, "batch_size": 64}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- parameters --------------------------------------------------------------------------------
def test_params_are_the_constructor_signature():
    aligner = build_aligner("mlp_scorer", metric="euclidean", dim=4, epochs=7, hidden=9)
    params = aligner.get_params()
    assert params["dim"] == 4 and params["epochs"] == 7 and params["hidden"] == 9
    assert params["metric"] is Metric.EUCLIDEAN and params["loss_params"] == {}
    # every parameter of the class and of the parents its **kwargs feed
    assert {"head_depth", "dropout", "patience", "loss"} <= set(params)
    assert not {"seed", "progress", "device", "image_encoder"} & set(params)


def test_set_params_rebuilds_and_validates():
    aligner = build_aligner("ridge", alpha=0.5).fit(TRAIN)
    assert aligner.set_params(alpha=2.0) is aligner
    assert aligner.get_params()["alpha"] == 2.0 and aligner.text_proj_ is None  # fit is gone
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        aligner.set_params(alpha=-1)
    with pytest.raises(ValueError, match="no parameter.*alpah"):
        aligner.set_params(alpah=1)


def test_a_parameter_not_stored_under_its_name_cannot_pass_unnoticed():
    class Forgetful(Aligner):
        kind = "forgetful"

        def __init__(self, metric="cosine", scale: float = 1.0) -> None:
            self.metric = Metric(metric)  # `scale` is dropped

        def transform_images(self, x):
            return x

        def transform_texts(self, y):
            return y

    with pytest.raises(AttributeError, match="scale"):
        Forgetful(scale=2.0).get_params()


def test_traits_are_class_attributes():
    assert aligner_traits("linear") == {
        "trained": True,
        "learned_scorer": False,
        "composite": False,
    }
    assert aligner_traits("bilinear")["learned_scorer"] and aligner_traits("bilinear")["trained"]
    assert aligner_traits("ensemble") == {
        "trained": False,
        "learned_scorer": True,
        "composite": True,
    }
    assert not any(aligner_traits(k)[t] for k in ("cca", "conse", "relative") for t in ("trained",))
    with pytest.raises(KeyError, match="unknown aligner 'nope'"):
        aligner_traits("nope")


# --- the fit context -----------------------------------------------------------------------
def test_primary_must_name_a_score_of_the_run():
    with pytest.raises(ValueError, match=r"primary 't2i_R@1' .* ks \[5, 10\]"):
        FitContext(ks=(5, 10), primary="t2i_R@1")
    with pytest.raises(ValueError, match="primary 'medr'"):
        FitContext(primary="medr")  # lower is better: not a score to maximise
    assert FitContext(ks=[5, 10], primary="i2t_R@5").ks == (5, 10)


@pytest.mark.parametrize("primary", ["rsum", "t2i_R@5", "i2t_MRR"])
def test_early_stopping_selects_on_the_primary_score_over_the_run_ks(primary):
    context = FitContext(seed=1, val=VAL, ks=(5, 10), primary=primary)
    linear = build_aligner("linear", dim=8, epochs=6, eval_every=2, patience=1, batch_size=64)
    aligner = linear.fit(TRAIN, context)
    evaluated = [r for r in aligner.history_ if f"val_{primary}" in r]
    assert [r["epoch"] for r in evaluated] == [2, 4, 6][: len(evaluated)]
    best = max(evaluated, key=lambda r: r[f"val_{primary}"])
    assert aligner.best_epoch_ == best["epoch"]
    report = aligner.fit_report_
    assert report["best_epoch"] == best["epoch"]
    assert report["stopped_epoch"] == aligner.history_[-1]["epoch"] >= report["best_epoch"]


def test_without_validation_the_last_epoch_is_kept():
    aligner = build_aligner("linear", dim=8, **FAST).fit(TRAIN)
    assert aligner.fit_report_ == {"best_epoch": None, "stopped_epoch": 3}


# --- fits that cannot flatter --------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "metric", "params"),
    [
        ("linear", "cosine", {"dim": 8}),
        ("linear", "euclidean", {"loss": "mse"}),
        ("mlp", "chi_square", {"dim": 8, "hidden": 16}),
        ("bilinear", "cosine", {"dim": 8, "rank": 4}),
    ],
)
def test_a_diverging_fit_fails_explicitly(kind, metric, params):
    aligner = build_aligner(kind, metric=metric, lr=1e6, epochs=10, batch_size=64, **params)
    with pytest.raises(FitDiverged, match=rf"aligner '{kind}' diverged at epoch \d+: ") as e:
        aligner.fit(TRAIN, FitContext(val=VAL))
    assert e.value.kind == kind and 1 <= e.value.epoch <= 10


def test_nan_validation_scores_are_never_kept(monkeypatch):
    from xmodal.align.training import TorchAligner

    def nan_scores(self):
        return lambda q, g: np.full((len(q), len(g)), np.nan, np.float32)

    monkeypatch.setattr(TorchAligner, "scorer", nan_scores)
    aligner = build_aligner("linear", dim=8, eval_every=1, **FAST)
    with pytest.raises(FitDiverged, match="epoch 1: validation scores hold NaN"):
        aligner.fit(TRAIN, FitContext(val=VAL))


def test_non_finite_learned_arrays_are_refused():
    aligner = build_aligner("ridge").fit(TRAIN)
    aligner.text_proj_[0, 0] = np.nan
    with pytest.raises(FitDiverged, match="text_proj holds NaN"):
        aligner.require_finite_state()


def test_the_runner_records_a_diverged_fit_as_failed(tmp_path):
    from xmodal.experiments.config import AlignerConfig, EncoderConfig
    from xmodal.experiments.runner import Fit, FitInputs, _fit_row

    splits = {"train": TRAIN, "val": VAL, "test": TEST}
    shared = FitInputs(
        splits, EncoderConfig(image="a", text="b"), {"dataset": "d"}, [1, 5], False, tmp_path
    )
    bad = AlignerConfig(kind="linear", lr=1e6, epochs=5, batch_size=64)
    row = _fit_row(Fit(bad, Metric.COSINE, 0, "models/bad.safetensors"), shared, False)
    assert row["status"].startswith("failed: aligner 'linear' diverged at epoch")
    recalls = [k for k in row if "R@" in k]
    assert sorted(recalls) == ["i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"]
    assert all(np.isnan(row[k]) for k in [*recalls, "rsum"])
    assert not (tmp_path / "models/bad.safetensors").exists()
    good = AlignerConfig(kind="linear", dim=8, epochs=5, eval_every=2, batch_size=64)
    row = _fit_row(Fit(good, Metric.COSINE, 0, "models/good.safetensors"), shared, False)
    assert row["status"] == "ok" and row["stopped_epoch"] == 5 and row["best_epoch"] in (2, 4, 5)
    assert 0 <= row["t2i_R@1"] <= 100 and (tmp_path / "models/good.safetensors").exists()


# --- saved files ---------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "a.safetensors"
    build_aligner("linear", dim=8, **FAST).fit(TRAIN).save(path)
    return path


def test_saved_file_has_normal_permissions_and_no_leftovers(saved):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_a_changed_byte_is_caught(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor
    saved.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"a\.safetensors: checksum mismatch"):
        load_aligner(saved)


@pytest.mark.parametrize("cut", [7, 200, -3])
def test_a_truncated_file_is_caught(saved, cut):
    saved.write_bytes(saved.read_bytes()[:cut])
    with pytest.raises(IntegrityError, match=r"a\.safetensors: not a readable aligner file"):
        load_aligner(saved)


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata={"xmodal": json.dumps(meta)})


def test_garbled_header_unknown_kind_and_non_finite_weights_are_caught(tmp_path):
    from xmodal.align.base import _file_digest

    def signed(meta):  # a header as `save` writes it: its checksum covers header and arrays
        return meta | {"sha256": _file_digest(meta, tensors)}

    path = tmp_path / "x.safetensors"
    tensors = {"text_mean": np.zeros(3, np.float32), "image_mean": np.zeros(3, np.float32)}
    meta = {"kind": "center", "params": {"metric": "cosine"}}
    _write(path, tensors, signed(meta))
    assert isinstance(load_aligner(path), ALIGNERS["center"])
    save_file(tensors, str(path), metadata={"xmodal": "{not json"})
    with pytest.raises(IntegrityError, match="x.safetensors: not a readable"):
        load_aligner(path)
    save_file(tensors, str(path))
    with pytest.raises(IntegrityError, match="x.safetensors: no xmodal aligner header"):
        load_aligner(path)
    _write(path, tensors, {"kind": "center", "params": {}})
    with pytest.raises(IntegrityError, match="x.safetensors: saved without a checksum"):
        load_aligner(path)
    _write(path, tensors, signed(meta) | {"kind": "telepathy"})  # changed after signing
    with pytest.raises(IntegrityError, match="x.safetensors: checksum mismatch"):
        load_aligner(path)
    _write(path, tensors, signed(meta | {"kind": "telepathy"}))
    with pytest.raises(
        IntegrityError, match="x.safetensors: unknown aligner 'telepathy'; choices: .*identity"
    ):
        load_aligner(path)
    _write(path, tensors, signed(meta | {"params": {"metric": "cosine", "alpha": 1}}))
    with pytest.raises(IntegrityError, match="x.safetensors: its 'center' parameters"):
        load_aligner(path)
    tensors["text_mean"][1] = np.inf
    _write(path, tensors, signed(meta))
    with pytest.raises(IntegrityError, match="x.safetensors: text_mean holds NaN or inf"):
        load_aligner(path)


# --- every registered kind round-trips ------------------------------------------------------
METRICS = st.sampled_from(list(Metric))
TRAINING = {
    "epochs": st.integers(1, 3),
    "batch_size": st.integers(2, 32),
    "lr": st.floats(1e-4, 1e-2),
    "weight_decay": st.floats(0, 0.1),
    "eval_every": st.integers(1, 2),
    "patience": st.integers(1, 3),
    "standardize": st.booleans(),
}
RANKING_LOSSES = [
    ("infonce", {}),
    ("infonce", {"temperature": 0.1, "learn_temperature": False}),
    ("hinge", {"margin": 0.3, "hardest": False}),
    ("listnet", {}),
    ("listmle", {}),
]


def _trained(losses, **arch):
    loss = st.sampled_from(losses).map(lambda lp: {"loss": lp[0], "loss_params": lp[1]})
    return st.fixed_dictionaries({"metric": METRICS, **TRAINING, **arch}).flatmap(
        lambda d: loss.map(lambda lp: d | lp)
    )


MEMBER = st.one_of(
    st.fixed_dictionaries({"kind": st.just("cca"), "dim": st.integers(1, 4)}),
    st.fixed_dictionaries({"kind": st.just("ridge"), "alpha": st.floats(0.01, 5)}),
    st.fixed_dictionaries({"kind": st.just("relative"), "n_anchors": st.integers(1, 20)}),
    st.fixed_dictionaries(
        {"kind": st.just("linear"), "dim": st.integers(1, 4), "epochs": st.integers(1, 2)}
    ),
).flatmap(lambda m: st.one_of(st.just(m), st.floats(0.1, 3).map(lambda w: m | {"weight": w})))

#: a strategy of constructor parameters per registered kind
STRATEGIES = {
    "identity": st.fixed_dictionaries({"metric": METRICS}),
    "center": st.fixed_dictionaries({"metric": METRICS}),
    "ridge": st.fixed_dictionaries(
        {
            "metric": METRICS,
            "alpha": st.floats(0, 10),
            "direction": st.sampled_from(["text_to_image", "image_to_text"]),
        }
    ),
    "procrustes": st.fixed_dictionaries(
        {"metric": METRICS, "dim": st.integers(1, 6), "whiten": st.booleans()}
    ),
    "cca": st.fixed_dictionaries(
        {
            "metric": METRICS,
            "dim": st.integers(1, 6),
            "reg": st.floats(0.01, 1),
            "power": st.floats(0, 2),
        }
    ),
    "relative": st.fixed_dictionaries(
        {
            "metric": METRICS,
            "n_anchors": st.integers(1, 50),
            "topk": st.integers(0, 8),
            "power": st.floats(0.5, 3),
            "center": st.booleans(),
        }
    ),
    "conse": st.fixed_dictionaries(
        {"metric": METRICS, "top": st.integers(1, 8), "template": st.sampled_from(["A {}.", "{}"])}
    ),
    "linear": _trained(
        [*RANKING_LOSSES, ("mse", {})], dim=st.integers(1, 6), dropout=st.floats(0, 0.5)
    ),
    "mlp": _trained(
        [*RANKING_LOSSES, ("mse", {})],
        dim=st.integers(1, 6),
        hidden=st.integers(1, 8),
        depth=st.integers(1, 2),
        dropout=st.floats(0, 0.5),
    ),
    "mlp_scorer": _trained(
        RANKING_LOSSES,
        dim=st.integers(1, 6),
        hidden=st.integers(1, 8),
        depth=st.integers(1, 2),
        head_depth=st.integers(0, 1),
        head_hidden=st.integers(1, 8),
        dropout=st.floats(0, 0.5),
    ),
    "bilinear": _trained(
        RANKING_LOSSES,
        dim=st.integers(1, 6),
        rank=st.integers(1, 4),
        head_depth=st.integers(0, 1),
        dropout=st.floats(0, 0.5),
    ),
    "ensemble": st.fixed_dictionaries(
        {
            "metric": METRICS,
            "members": st.lists(MEMBER, min_size=1, max_size=3),
            "csls": st.integers(0, 4),
        }
    ),
}
#: the encoder pair conse reads its classifier from, and the dims of its vectors
CONSE = FitContext(image_encoder="effnet-lite0", text_encoder="minilm")


def _data(kind: str, seed: int) -> tuple[Embedded, Embedded]:
    """(train, test) of positive random vectors (chi-square needs them), dims the kind needs."""
    d_image, d_text = {"conse": (1280, 384), "identity": (8, 8), "center": (8, 8)}.get(
        kind, (12, 8)
    )
    rng = np.random.default_rng(seed)

    def split(n: int) -> Embedded:
        owner = np.repeat(np.arange(n), 2)
        images = rng.random((n, d_image), np.float32)
        return Embedded(images, rng.random((2 * n, d_text), np.float32), owner)

    return split(20), split(6)


def test_every_registered_kind_has_a_strategy():
    own = {k for k in ALIGNERS if ALIGNERS[k].__module__.startswith("xmodal.")}  # not plugins
    assert set(STRATEGIES) == own


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.slow) if k == "conse" else k for k in STRATEGIES]
)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_kind_round_trips_through_a_file(kind, data, tmp_path_factory):
    params = data.draw(STRATEGIES[kind], label="params")
    seed = data.draw(st.integers(0, 3), label="seed")
    train, test = _data(kind, seed)
    context = FitContext(seed=seed, val=test if aligner_traits(kind)["trained"] else None)
    if kind == "conse":
        context = CONSE
    aligner = build_aligner(kind, **params).fit(train, context)
    path = tmp_path_factory.mktemp(kind) / "a.safetensors"
    aligner.save(path)
    loaded = load_aligner(path)
    assert type(loaded) is type(aligner)
    want = aligner.get_params()
    assert set(want) == set(type(aligner).param_names())
    for name, value in loaded.get_params().items():
        assert value == want[name], name
    for name, value in params.items():  # what was asked for is what came back
        assert want[name] == value, name
    before = aligner.scorer()(
        aligner.transform_texts(test.texts), aligner.transform_images(test.images)
    )
    after = loaded.scorer()(
        loaded.transform_texts(test.texts), loaded.transform_images(test.images)
    )
    assert before.shape == (len(test.texts), len(test.images))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_the_progress_bar_names_the_fit_and_closes_with_its_epochs(capsys):
    aligner = build_aligner("linear", dim=8, epochs=50, eval_every=1, patience=2, lr=1e-6)
    label = "fit 3/8: linear / cosine / seed 0"
    aligner.fit(TRAIN, FitContext(val=VAL, progress=True, label=label))
    err = capsys.readouterr().err
    stopped, kept = aligner.fit_report_["stopped_epoch"], aligner.fit_report_["best_epoch"]
    assert stopped < 50  # a learning rate this small stops improving: early stopping ends it
    assert label in err and f"stopped at epoch {stopped}, kept {kept}" in err
