"""Config validation stops bad configs before any work, naming the file and key."""

import re

import pytest
import yaml

from xmodal.experiments.config import ConfigError, check_inputs, load_config, parse_config

GOOD = {
    "datasets": [{"source": "tuxpaint"}],
    "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
    "aligners": [{"kind": "identity"}],
}


def test_good_config_gets_defaults():
    c = parse_config(GOOD)
    assert [str(m) for m in c.metrics] == ["cosine"]
    assert c.seeds == [0] and c.ks == [1, 5, 10] and c.jobs == 1
    assert c.datasets[0].split.fractions() == {"train": 0.7, "val": 0.1, "test": 0.2}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"metrics": ["cosine", "hamming"]}, "metrics.1"),
        (
            {"datasets": [{"source": "x", "split": {"train": 0.9, "val": 0.2, "test": 0.1}}]},
            "datasets.0.split",
        ),
        ({"encoders": [{"image": "effnet-lite0"}]}, "encoders.0"),
        ({"encoders": [{"model": "a", "image": "b", "text": "c"}]}, "encoders.0"),
        ({"aligners": [{"kind": "no-such-aligner"}]}, "aligners: no-such-aligner"),
        ({"aligners": [{"kind": "identity", "bogus_param": 3}]}, "aligners: identity"),
        ({"datasets": []}, "datasets"),
        ({"typo_key": 1}, "typo_key"),
        ({"jobs": 0}, "jobs"),
    ],
)
def test_errors_name_the_key(patch, expected):
    with pytest.raises(ConfigError) as e:
        parse_config({**GOOD, **patch}, "my.yaml")
    assert str(e.value).startswith("my.yaml: ")
    assert expected in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_shipped_configs_are_valid():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("configs/*.yaml")):
        load_config(path)


def test_grid_expands_into_named_aligners():
    raw = {
        **GOOD,
        "aligners": [{"kind": "identity"}, {"kind": "ridge", "grid": {"alpha": [0.1, 1.0]}}],
    }
    aligners = parse_config(raw).aligners
    assert [a.label for a in aligners] == ["identity", "ridge[alpha=0.1]", "ridge[alpha=1.0]"]
    assert [a.params.get("alpha") for a in aligners] == [None, 0.1, 1.0]


def test_grid_values_are_checked_like_parameters():
    raw = {**GOOD, "aligners": [{"kind": "ridge", "grid": {"alpha": [1.0, -1.0]}}]}
    with pytest.raises(ConfigError, match=r"aligners: ridge\[alpha=-1.0\] \(cosine\)"):
        parse_config(raw)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"ks": [0]}, "ks: Value error, every K must be >= 1"),
        ({"ks": [5, 5]}, "a K is listed twice"),
        ({"seeds": [1, 1]}, "a seed is listed twice"),
        ({"aligners": [{"kind": "linear", "epochs": 0}]}, "aligners: linear (cosine)"),
        ({"aligners": [{"kind": "linear", "dimm": 4}]}, "aligners: linear (cosine)"),
        ({"primary": "t2i_R@50"}, "choose one of rsum, t2i_R@1, t2i_R@5"),
        ({"ks": [5], "primary": "i2t_R@5"}, None),
    ],
)
def test_early_checks(patch, expected):
    if expected is None:
        assert parse_config({**GOOD, **patch}).primary == patch["primary"]
        return
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config({**GOOD, **patch}, "my.yaml")


def test_relative_data_paths_are_read_beside_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = tmp_path / "sub" / "c.yaml"
    raw = {**GOOD, "datasets": [{"source": "manifest:data/m.csv", "images": "imgs"}]}
    cfg.write_text(yaml.safe_dump(raw))
    (d,) = load_config(cfg).datasets
    assert d.source == f"manifest:{tmp_path / 'sub' / 'data' / 'm.csv'}"
    assert d.images == str(tmp_path / "sub" / "imgs")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "sub" / "data" / "m.csv"))):
        check_inputs(load_config(cfg), str(cfg))


def test_unknown_encoder_is_caught_without_loading_a_model(tmp_path):
    (tmp_path / "m.csv").write_text("image,caption\n")  # data that exists: the encoder is next
    source = [{"source": f"manifest:{tmp_path / 'm.csv'}"}]
    config = parse_config({**GOOD, "datasets": source, "encoders": [{"model": "nope:x"}]})
    expected = "encoders.0.model: unknown vision-language model 'nope' in spec 'nope:x'; choices:"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_inputs(config)
