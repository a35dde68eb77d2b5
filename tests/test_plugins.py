"""Third-party extensions through entry points: the toy package in tests/plugin_pkg adds a data
format, an encoder pair, an aligner and a metric, and a real experiment uses all four."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from xmodal.align.base import load_aligner
from xmodal.align.registry import ALIGNERS, aligner_traits, build_aligner
from xmodal.data.loaders import FORMATS
from xmodal.encoders.registry import PAIR
from xmodal.experiments import run_experiment
from xmodal.experiments.config import ConfigError, parse_config
from xmodal.registry import PluginError
from xmodal.retrieval.index import build_index
from xmodal.similarity.metrics import METRICS, Metric, get_metric, metric_names
from xmodal.similarity.ranking import retrieval_scores

PLUGIN = Path(__file__).parent / "plugin_pkg"
REGISTRIES = (FORMATS, PAIR, ALIGNERS, METRICS)


def install(site: Path, dist: str, groups: dict[str, dict[str, str]]) -> None:
    """What `pip install` leaves for importlib.metadata: a dist-info folder with METADATA and
    entry_points.txt, in a folder that goes on sys.path."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = []
    for group, entries in groups.items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for registry in REGISTRIES:
        registry.refresh()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for dist-infos; afterwards every plugin entry is forgotten."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))
    monkeypatch.syspath_prepend(str(site))
    before = {id(r): set(r._entries) for r in REGISTRIES if r.names()}  # built-ins loaded
    yield site
    for r in REGISTRIES:
        for name in set(r._entries) - before[id(r)]:
            del r[name]
    Metric._value2member_map_.pop("chebyshev", None)
    for module in [m for m in sys.modules if m.startswith("xmodal_toy")]:
        del sys.modules[module]


@pytest.fixture
def toy(site):
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    install(site, project["name"], project["entry-points"])
    return site


def test_plugins_are_listed_without_being_imported(toy):
    assert "toy-lstsq" in ALIGNERS.names() and "chebyshev" in metric_names()
    assert "toy-colours" in FORMATS and "toy" in PAIR
    assert not any(m.startswith("xmodal_toy") for m in sys.modules)
    assert aligner_traits("toy-lstsq") == {
        "trained": True,
        "learned_scorer": False,
        "composite": False,
    }
    assert "xmodal_toy.aligner" in sys.modules and "xmodal_toy.metric" not in sys.modules
    assert build_aligner("toy-lstsq", metric="chebyshev").kind == "toy-lstsq"


def test_plugin_metric_scores_match_its_reference(toy):
    from xmodal.similarity import block_scores, reference_scores, topk

    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((5, 7)), rng.standard_normal((30, 7))
    ref = reference_scores(q, g, "chebyshev")
    np.testing.assert_allclose(block_scores(q, g, "chebyshev"), ref, rtol=1e-6)
    _, idx = topk(q, g, 4, "chebyshev", block_size=16)
    np.testing.assert_array_equal(idx, np.argsort(-ref, 1, kind="stable")[:, :4])
    index = build_index("flat", dim=7, metric="chebyshev")
    index.add(g)
    np.testing.assert_array_equal(index.search(q, 4)[1], idx)


def test_an_experiment_runs_on_plugins_only(toy, tmp_path):
    config = parse_config(
        {
            "name": "toy",
            "datasets": [{"source": f"toy-colours:{tmp_path}", "split": {"seed": 3}}],
            "encoders": [{"model": "toy"}],
            "aligners": [{"kind": "toy-lstsq"}],
            "metrics": ["chebyshev", "cosine"],
            "cache_dir": str(tmp_path / "cache"),
            "runs_dir": str(tmp_path / "runs"),
        }
    )
    result = run_experiment(config, progress=False)
    by_metric = {row["metric"]: row for row in result.rows}
    assert set(by_metric) == {"chebyshev", "cosine"}
    row = by_metric["chebyshev"]
    assert row["kind"] == "toy-lstsq" and row["dataset"] == "toy-colours"
    # the row's numbers are the plugin metric's: recompute them from the saved model and split
    aligner = load_aligner(result.folder / row["model"])
    assert type(aligner).__name__ == "LeastSquares" and aligner.metric == "chebyshev"
    (split,) = (result.folder / "embeddings").glob("*.npz")
    test = np.load(split)
    from xmodal.embeddings import Embedded

    data = aligner.transform(Embedded(test["images"], test["texts"], test["caption_image"]))
    reference = get_metric("chebyshev").reference
    want = retrieval_scores(data, lambda t, i: reference(t[:, None], i[None]), config.ks)
    # a K at or above a gallery's size is 100 whatever the metric: the run leaves it out of RSUM
    galleries = {"t2i": len(data.images), "i2t": len(data.texts)}
    want["rsum"] = sum(want[f"{d}_R@{k}"] for d, n in galleries.items() for k in config.ks if k < n)
    keys = [f"{d}_{m}" for d in ("t2i", "i2t") for m in ("MRR", "meanr", "R@1", "R@5")]
    for key in [*keys, "rsum"]:
        assert row[key] == pytest.approx(want[key]), key
    assert any(row[key] != pytest.approx(by_metric["cosine"][key]) for key in keys)


def test_a_broken_plugin_names_its_entry_point(site):
    install(
        site,
        "broken-plugin",
        {
            "xmodal.aligners": {"gone": "xmodal_toy_missing:Nothing"},
            "xmodal.metrics": {"not-a-metric": "xmodal_toy.metric:_reference"},
        },
    )
    with pytest.raises(
        PluginError,
        match=r"entry point 'gone' in group 'xmodal.aligners' "
        r"\(xmodal_toy_missing:Nothing, from package broken-plugin 0.1.0\) "
        r"failed to load: ModuleNotFoundError",
    ):
        build_aligner("gone")
    with pytest.raises(PluginError, match="'not-a-metric'.*is not a usable metric: a metric must"):
        get_metric("not-a-metric")
    with pytest.raises(ConfigError, match="unknown metric 'hamming'; choices: .*not-a-metric"):
        parse_config(
            {
                "datasets": [{"source": "tuxpaint"}],
                "encoders": [{"model": "toy"}],
                "aligners": [{"kind": "identity"}],
                "metrics": ["hamming"],
            }
        )


def test_two_packages_claiming_one_name_is_an_error(site):
    install(site, "one", {"xmodal.metrics": {"twice": "xmodal_toy.metric:CHEBYSHEV"}})
    install(site, "two", {"xmodal.metrics": {"twice": "xmodal_toy.other:METRIC"}})
    with pytest.raises(PluginError, match="several installed packages define it"):
        get_metric("twice")
