"""End to end: a manifest of real image files -> the real default encoders -> cache -> a trained
aligner -> Recall@K -> a complete run folder; bad inputs are reported, not fatal."""

import json
import math
import re

import numpy as np
import pytest
import yaml
from data_fixtures import write_shapes_manifest

from xmodal.cli import main
from xmodal.experiments import load_config, run_experiment
from xmodal.experiments.config import ConfigError
from xmodal.experiments.run_folder import RunFolder, rounded
from xmodal.similarity.metrics import Metric


@pytest.fixture(scope="module")
def shapes_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    bad = (
        "empty.png,an empty file",
        "text.png,a text file",
        "gone.png,a missing file",
        "red_circle.png,an unquoted, comma",  # one field too many: a malformed row
    )
    return write_shapes_manifest(root, bad)


def _config(tmp_path, manifest, aligners):
    raw = {
        "name": "shapes",
        "datasets": [
            {
                "source": f"manifest:{manifest}",
                "split": {"train": 0.5, "val": 0.0, "test": 0.5, "seed": 1},
            }
        ],
        "encoders": [{"image": "effnet-lite0", "text": "minilm"}],
        "metrics": ["cosine", "manhattan"],
        "aligners": aligners,
        "cache_dir": str(tmp_path / "cache"),
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_run_writes_a_complete_run_folder(tmp_path, shapes_manifest, capsys):
    path = _config(tmp_path, shapes_manifest, [{"kind": "linear", "epochs": 20}])
    assert main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| linear | cosine |" in out and "| linear | manhattan |" in out
    (folder,) = (tmp_path / "runs").iterdir()
    for name in (
        "results.csv",
        "results.json",
        "results.md",
        "config.yaml",
        "run.json",
        "problems.jsonl",
    ):
        assert (folder / name).stat().st_size > 0, name
    results = json.loads((folder / "results.json").read_text())
    assert len(results["runs"]) == 2
    row = results["runs"][0]
    assert row["test_images"] == 6 and row["n_captions"] == 12
    assert 0 <= row["t2i_R@1"] <= 100 and row["i2t_R@10"] == 100.0  # 6 images: all in top 10
    problems = [json.loads(line) for line in (folder / "problems.jsonl").read_text().splitlines()]
    where = " ".join(p["where"] + " " + p["message"] for p in problems)
    for bad in ("empty.png", "text.png", "gone.png", f"shapes.csv:{1 + 24 + 4}"):
        assert bad in where, bad
    record = json.loads((folder / "run.json").read_text())
    assert record["versions"]["torch"] == "2.13.0+cpu" or record["versions"]["torch"]
    assert record["skipped_inputs"] == len(problems)
    assert len(list((folder / "models").glob("*.safetensors"))) == 2


@pytest.mark.slow
def test_same_config_same_numbers(tmp_path, shapes_manifest):
    path = _config(tmp_path, shapes_manifest, [{"kind": "linear", "epochs": 10}])
    config = load_config(path)
    first = run_experiment(config, progress=False).rows
    second = run_experiment(config, progress=False).rows
    keys = ("t2i_R@1", "i2t_R@1", "t2i_MRR", "rsum")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]
    assert np.isfinite([r["rsum"] for r in first]).all()


@pytest.mark.slow
def test_interrupted_run_resumes_without_losing_or_repeating_a_fit(
    tmp_path, shapes_manifest, monkeypatch, capsys
):
    from xmodal.experiments import runner

    path = _config(tmp_path, shapes_manifest, [{"kind": "linear", "epochs": 10}])
    config = load_config(path).model_copy(update={"seeds": [0, 1]})  # 2 metrics x 2 seeds
    whole = run_experiment(config, out_dir=tmp_path / "whole", progress=False).rows

    calls = []
    real_fit = runner.fit_aligner

    def fit_then_stop(*args, **kwargs):
        calls.append(args[1:3])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the third fit never finishes
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_aligner", fit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, out_dir=tmp_path / "cut", progress=False)
    (folder,) = (tmp_path / "cut").iterdir()
    with open(RunFolder(folder).rows, "a") as log:
        log.write('{"dataset": "shap')  # a line cut short as the process died
    calls.clear()
    monkeypatch.setattr(
        runner, "fit_aligner", lambda *a, **k: calls.append(a[1:3]) or real_fit(*a, **k)
    )
    assert main(["run", "--resume", str(folder), "--quiet"]) == 0
    assert calls == [("manhattan", 0), ("manhattan", 1)]  # only the unfinished fits ran

    resumed = json.loads((folder / "results.json").read_text())["runs"]
    keys = ("aligner", "metric", "seed", "t2i_R@1", "i2t_R@1", "t2i_MRR", "rsum", "model")
    # results.json rounds for people (6 significant digits); rows.jsonl keeps every digit
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in rounded(whole)]
    logged = RunFolder(folder).logged_rows()
    assert sorted(r["model"] for r in logged) == sorted(r["model"] for r in whole)
    assert json.loads((folder / "run.json").read_text())["fits_reused_from_an_interrupted_run"] == 2

    log = (RunFolder(folder).rows).read_text()
    (RunFolder(folder).rows).write_text("garbage\n" + log)
    with pytest.raises(ValueError, match=r"rows.jsonl:1: not a JSON row"):
        run_experiment(config, progress=False, resume=folder)
    (RunFolder(folder).rows).write_text(log)

    other = config.model_copy(update={"seeds": [0]})
    # each aligner entry of config.yaml states its seeds: both differ
    with pytest.raises(ConfigError, match="differs in: aligners, seeds"):
        run_experiment(other, progress=False, resume=folder)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_build_and_search_from_the_command_line(tmp_path, shapes_manifest, capsys, kind):
    path = _config(tmp_path, shapes_manifest, [{"kind": "linear", "epochs": 30}])
    assert main(["run", str(path), "--quiet"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    model = next((folder / "models").glob("*cosine*.safetensors"))
    out = tmp_path / "collection"
    argv = ["index", "build", str(path), "--aligner", str(model), "--kind", kind, "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(out), "a blue square", "-k", "3"]) == 0
    hits = capsys.readouterr().out.strip().splitlines()
    assert len(hits) == 3
    scores = [float(line.split()[0]) for line in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(".png" in line for line in hits)
    image = shapes_manifest.parent / "red_circle.png"
    assert main(["search", str(out), "--image", str(image), "-k", "24"]) == 0
    captions = capsys.readouterr().out.strip().splitlines()
    assert len(captions) == 24  # k beyond what one image has: every caption, ranked
    assert main(["search", str(out)]) == 2  # neither a query nor an image


@pytest.mark.slow
def test_parallel_jobs_give_the_same_rows_as_one(tmp_path, shapes_manifest):
    aligners = [{"kind": "linear", "epochs": 10}, {"kind": "cca", "dim": 4}]
    config = load_config(_config(tmp_path, shapes_manifest, aligners))
    config = config.model_copy(update={"seeds": [0, 1]})
    one = run_experiment(config, out_dir=tmp_path / "one", progress=False).rows
    two = run_experiment(config, out_dir=tmp_path / "two", progress=False, jobs=2)
    keys = ("aligner", "metric", "seed", "t2i_R@1", "i2t_R@1", "t2i_MRR", "i2t_MRR", "rsum")
    assert [[r[k] for k in keys] for r in two.rows] == [[r[k] for k in keys] for r in one]
    logged = (two.folder / "rows.jsonl").read_text().splitlines()
    assert len(logged) == len(one) == 8 and len(list((two.folder / "models").iterdir())) == 8


@pytest.mark.slow
@pytest.mark.parametrize("ks", [[1], [5, 10], [1, 5, 10, 50]])
def test_result_columns_follow_ks(tmp_path, shapes_manifest, ks):
    path = _config(tmp_path, shapes_manifest, [{"kind": "ridge"}])
    config = load_config(path).model_copy(update={"ks": ks, "metrics": [Metric.COSINE]})
    result = run_experiment(config, progress=False)
    (row,) = result.rows
    recall = [k for k in row if re.fullmatch(r"(t2i|i2t)_R@\d+", k)]  # not their CI bounds
    assert recall == [f"{d}_R@{k}" for d in ("t2i", "i2t") for k in ks]
    # 6 test images, 12 test captions: a K at or above a gallery says nothing
    trivial = [f"t2i_R@{k}" for k in ks if k >= 6] + [f"i2t_R@{k}" for k in ks if k >= 12]
    assert all(row[c] == 100 for c in trivial)  # true, and says nothing: not in RSUM
    kept = [c for c in recall if c not in trivial]
    assert row["rsum"] == pytest.approx(sum(row[c] for c in kept))
    warnings = json.loads((result.folder / "run.json").read_text())["warnings"]
    gallery = [w for w in warnings if "test gallery holds" in w]
    assert bool(gallery) == bool(trivial)
    small = [w for w in warnings if w not in gallery]  # 6 test images: said once, whatever ks
    assert len(small) == 1 and "the test split holds 6 images (< 100)" in small[0]
    md = (result.folder / "results.md").read_text()
    assert all(c in md for c in recall)


@pytest.mark.slow
def test_primary_score_drives_validation_columns(tmp_path, shapes_manifest):
    path = _config(tmp_path, shapes_manifest, [{"kind": "ridge"}])
    raw = yaml.safe_load(path.read_text())
    raw["datasets"][0]["split"] = {"train": 0.5, "val": 0.2, "test": 0.3, "seed": 1}
    raw |= {"ks": [2, 3], "primary": "i2t_R@3", "metrics": ["cosine"]}
    path.write_text(yaml.safe_dump(raw))
    (row,) = run_experiment(load_config(path), progress=False).rows
    assert {"val_t2i_R@2", "val_i2t_R@2", "val_rsum", "val_i2t_R@3"} <= set(row)


def test_bad_inputs_fail_before_a_run_folder_exists(tmp_path, shapes_manifest):
    from xmodal.experiments.config import parse_config

    good = yaml.safe_load(_config(tmp_path, shapes_manifest, [{"kind": "identity"}]).read_text())
    cases = {
        "datasets.0.source": {"datasets": [{"source": "manifest:nowhere/absent.csv"}]},
        "encoders.0.image": {"encoders": [{"image": "no-such-net", "text": "minilm"}]},
    }
    for key, patch in cases.items():
        config = parse_config({**good, **patch}, "c.yaml", base=tmp_path)
        with pytest.raises(ConfigError, match=key):
            run_experiment(config, progress=False)
        assert not (tmp_path / "runs").exists()  # no orphan run folder
    with pytest.raises(ConfigError, match=str(tmp_path / "nowhere" / "absent.csv")):
        run_experiment(parse_config({**good, **cases["datasets.0.source"]}, "c", base=tmp_path))


@pytest.mark.slow
def test_config_yaml_holds_the_defaults_that_were_used(tmp_path, shapes_manifest):
    path = _config(tmp_path, shapes_manifest, [{"kind": "linear", "epochs": 3}])
    result = run_experiment(load_config(path), progress=False)
    ran = yaml.safe_load((result.folder / "config.yaml").read_text())
    (linear,) = ran["aligners"]
    assert linear["epochs"] == 3  # as given
    assert linear["dim"] == 256 and linear["lr"] == 0.001 and linear["patience"] == 6
    assert "seed" not in linear  # varies per fit: the grid's seeds
    assert linear["seeds"] == [0] and linear["metrics"] == ["cosine", "manhattan"]
    assert "null" not in (result.folder / "config.yaml").read_text()
    assert ran["primary"] == "rsum" and ran["ks"] == [1, 5, 10]
    # the folder resumes under its own resolved config, and under the config it came from
    run_experiment(load_config(result.folder / "config.yaml"), progress=False, resume=result.folder)
    run_experiment(load_config(path), progress=False, resume=result.folder)


@pytest.mark.slow
def test_split_seeds_repeat_the_study_and_report_the_spread_over_splits(tmp_path, shapes_manifest):
    path = _config(tmp_path, shapes_manifest, [{"kind": "ridge"}])
    config = load_config(path)
    split = config.datasets[0].split.model_copy(update={"seeds": [0, 1, 2]})
    dataset = config.datasets[0].model_copy(update={"split": split})
    config = config.model_copy(update={"datasets": [dataset], "metrics": [Metric.COSINE]})
    result = run_experiment(config, progress=False)
    assert [r["split_seed"] for r in result.rows] == [0, 1, 2]
    assert len({r["model"] for r in result.rows}) == 3  # one model file per split
    # each split's row equals a run made on that split alone
    alone = config.model_copy(
        update={
            "datasets": [
                dataset.model_copy(
                    update={"split": split.model_copy(update={"seeds": [], "seed": 1})}
                )
            ]
        }  # fmt: skip
    )
    (one,) = run_experiment(alone, out_dir=tmp_path / "alone", progress=False).rows
    assert result.rows[1]["t2i_R@1"] == one["t2i_R@1"] and result.rows[1]["rsum"] == one["rsum"]
    (summary,) = result.summary
    assert summary["splits"] == 3
    rsums = [r["rsum"] for r in result.rows]
    assert summary["rsum_std_splits"] == pytest.approx(np.std(rsums, ddof=1))
    with pytest.raises(ValueError, match="split seeds must differ"):
        split.model_validate({"seeds": [1, 1]})


@pytest.mark.slow
def test_a_setting_the_data_cannot_take_fails_its_fit_and_the_run_goes_on(
    tmp_path, shapes_manifest
):
    # 12 training captions: CCA can keep at most 12 dimensions, so dim 64 cannot be fitted
    aligners = [{"kind": "cca", "dim": 64}, {"kind": "ridge"}]
    path = _config(tmp_path, shapes_manifest, aligners)
    assert main(["run", str(path), "--quiet"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    rows = RunFolder(folder).read_results()["runs"]
    cca = [r for r in rows if r["aligner"] == "cca"]
    assert cca and all(r["status"].startswith("failed: cca: dim must be in 1..") for r in cca)
    assert all(math.isnan(r["rsum"]) for r in cca)
    assert all(r["status"] == "ok" for r in rows if r["aligner"] == "ridge")
