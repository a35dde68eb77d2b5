"""The experiment config: a YAML file validated before any work starts.

Errors name the file and the key path (e.g. `demo.yaml: aligners.0.metrics.1: ...`).
A relative data path (`FORMAT:PATH`, `images`) is read from the folder of the config file
that names it; `cache_dir` and `runs_dir` stay relative to the working directory.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from xmodal.similarity.metrics import Metric

#: a registered metric's name (built-in or plugin); unknown names list the choices
MetricName = Annotated[Metric, BeforeValidator(Metric)]


class ConfigError(ValueError):
    """A config problem; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(Strict):
    """Fractions of *images* per split (all captions of an image share its split)."""

    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.2, gt=0, le=1)
    seed: int = 0
    #: several split seeds: the whole grid runs on each split, and the tables report the
    #: spread over splits beside the spread over aligner seeds (`seed` is then unused)
    seeds: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self

    @model_validator(mode="after")
    def _distinct_seeds(self) -> SplitConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"split seeds must differ, got {self.seeds}")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def split_seeds(self) -> list[int]:
        return self.seeds or [self.seed]


class DatasetConfig(Strict):
    source: str = Field(description='"FORMAT:PATH" or "tuxpaint"')
    images: str | None = Field(None, description="image root for formats that need one")
    name: str | None = None
    split: SplitConfig = Field(default_factory=lambda: SplitConfig.model_validate({}))
    options: dict[str, Any] = Field(default_factory=dict)
    #: training-language variants (see xmodal.experiments.languages): every aligner is fitted
    #: once per item, on the train captions in its languages: "all" (every loaded language,
    #: the default), one tag, or a list of tags; val and test keep every loaded language
    train_languages: list[str | list[str]] | None = None
    #: per-language scores are reported for languages with at least this many test captions
    #: (default 50)
    min_language_captions: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _known_train_languages(self) -> DatasetConfig:
        from xmodal.experiments.languages import check_train_languages

        check_train_languages(self.train_languages, self.options.get("languages"))
        return self

    @property
    def label(self) -> str:
        return self.name or self.source.split(":", 1)[0]


class EncoderConfig(Strict):
    """A vision-language `model`, or a separately trained `image` + `text` pair."""

    model: str | None = None
    image: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> EncoderConfig:
        if self.model is None and (self.image is None or self.text is None):
            raise ValueError("give `model`, or both `image` and `text`")
        if self.model is not None and (self.image or self.text):
            raise ValueError("give either `model` or `image` + `text`, not both")
        return self

    @property
    def label(self) -> str:
        return self.model or f"{self.image}+{self.text}"


class AlignerConfig(BaseModel):
    """`kind` plus the aligner's own hyper-parameters; `metrics`/`seeds` override the defaults.

    `grid` maps hyper-parameters to lists of values: the entry stands for one aligner per
    combination, named e.g. "linear[loss=hinge]".
    """

    model_config = ConfigDict(extra="allow")
    kind: str
    name: str | None = None
    metrics: list[MetricName] | None = None
    seeds: list[int] | None = None
    grid: dict[str, list[Any]] | None = None

    def expand(self) -> list[AlignerConfig]:
        if not self.grid:
            return [self]
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            setting = dict(zip(keys, values, strict=True))
            label = ", ".join(f"{k}={v}" for k, v in setting.items())
            fields = self.model_dump(exclude={"grid", "name"}) | self.params | setting
            out.append(AlignerConfig(name=f"{self.label}[{label}]", **fields))
        return out

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        return self.name or self.kind


class SelectionConfig(Strict):
    """How a configuration is chosen. `folds` (k >= 2): k-fold cross-validation on the training
    images, by image, scored with `primary` on each held-out fold; unset, the validation split
    chooses (see xmodal.experiments.crossval)."""

    folds: int | None = Field(None, ge=2)


class ExperimentConfig(Strict):
    name: str = "experiment"
    datasets: list[DatasetConfig] = Field(min_length=1)
    encoders: list[EncoderConfig] = Field(min_length=1)
    aligners: list[AlignerConfig] = Field(min_length=1)
    metrics: list[MetricName] = Field(default_factory=lambda: [Metric.COSINE], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    #: the score that validation, model selection and the findings rank by: one of
    #: `t2i_R@K`, `i2t_R@K` for a K of `ks`, or `rsum` (their sum)
    primary: str = "rsum"
    #: k-fold cross-validation on the training images for model selection (default: the
    #: validation split selects)
    selection: SelectionConfig | None = None
    geometry: bool = False
    cache_dir: str = "cache"
    runs_dir: str = "runs"
    device: str | None = None
    #: aligners fitted at once, one process each (the command line's --jobs overrides it)
    jobs: int = Field(1, ge=1)

    @field_validator("ks")
    @classmethod
    def _positive_distinct(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError(f"every K must be >= 1, got {ks}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"a K is listed twice: {ks}")
        return ks

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"a seed is listed twice: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _known_primary(self) -> ExperimentConfig:
        from xmodal.align.base import primary_columns

        if self.primary not in primary_columns(self.ks):
            raise ValueError(
                f"primary: {self.primary!r} is not a score of ks {self.ks}; "
                f"choose one of {', '.join(primary_columns(self.ks))}"
            )
        return self


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a config file; relative data paths are resolved against its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return parse_config(raw, str(path), base=path.parent)


def parse_config(raw: Any, where: str = "config", base: Path | None = None) -> ExperimentConfig:
    """Validate a config mapping; `base` is the folder relative data paths are read from
    (default: the working directory)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        lines = [
            f"{where}: {'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}"
            for err in e.errors()
        ]
        raise ConfigError("\n".join(lines)) from None
    config.aligners = [one for a in config.aligners for one in a.expand()]
    _check_aligners(config, where)
    if base is not None:
        for d in config.datasets:
            d.source, d.images = _resolved(d.source, base), _resolved_path(d.images, base)
    return config


def _resolved(source: str, base: Path) -> str:
    fmt, sep, location = source.partition(":")
    return f"{fmt}{sep}{_resolved_path(location, base)}" if location else source


def _resolved_path(location: str | None, base: Path) -> str | None:
    if not location:
        return location
    # absolute: the resolved config a run folder keeps reads the same data from anywhere
    return str((base / Path(location).expanduser()).absolute())


def resolved(config: ExperimentConfig) -> dict[str, Any]:
    """The config as it runs, for config.yaml: each aligner's metrics, seeds and parameter
    defaults made explicit; an unset optional key (e.g. `device`: the best one present) is left
    out rather than written as null."""
    from xmodal.align.registry import build_aligner

    raw = config.model_dump(mode="json", exclude_none=True)
    for entry, a in zip(raw["aligners"], config.aligners, strict=True):
        entry["metrics"] = [str(m) for m in a.metrics or config.metrics]
        entry["seeds"] = a.seeds or config.seeds
        defaults = build_aligner(a.kind, metric=entry["metrics"][0], **a.params).get_params()
        entry |= {k: v for k, v in defaults.items() if k != "metric" and k not in entry}
    return raw


def check_inputs(config: ExperimentConfig, where: str = "config") -> None:
    """Cheap checks of what a run will read, made before it starts: every data path exists,
    every encoder spec names a known encoder, and every local model path in a spec exists (no
    model is loaded)."""
    for i, d in enumerate(config.datasets):
        try:
            _check_source(d.source, d.images)
        except ValueError as e:
            raise ConfigError(f"{where}: datasets.{i}.source: {e}") from None
    for i, pair in enumerate(config.encoders):
        for role in ("model", "image", "text"):
            spec = getattr(pair, role)
            if spec is not None and (problem := _encoder_problem(spec, role)):
                raise ConfigError(f"{where}: encoders.{i}.{role}: {problem}")


def _check_source(source: str, images: str | None) -> None:
    from xmodal.data.loaders import FORMATS, data_root
    from xmodal.shards.format import SOURCE_PREFIX

    fmt, _, location = source.partition(":")
    if source.startswith(SOURCE_PREFIX):  # vectors computed beforehand by `xmodal embed`
        if not (Path(location).expanduser() / "manifest.json").is_file():
            raise ValueError(f"{location}: no manifest.json (not a folder of `xmodal embed`)")
        return
    if fmt not in FORMATS:
        raise ValueError(str(FORMATS.unknown(fmt, f" in {source!r}")))
    if fmt == "tuxpaint" and not location:
        location = str(data_root() / "tuxpaint")
    if not location:
        raise ValueError(f"{fmt} needs a path: {fmt}:PATH")
    for path in (location, images):
        if path and not Path(path).expanduser().exists():
            raise ValueError(
                f"{path}: not found (looked there; a relative path is read from"
                " the config file's folder)"
            )


def _encoder_problem(spec: str, role: str) -> str | None:
    """Why no encoder matches `spec` (its name, plugins included), or a local path in it is
    missing; None when the spec is fine."""
    from xmodal.encoders.registry import IMAGE, PAIR, TEXT
    from xmodal.encoders.specs import check_spec
    from xmodal.registry import Registry

    prefix = spec.partition(":")[0]
    table: Registry[Any] = IMAGE if role == "image" else TEXT if role == "text" else PAIR
    if prefix not in table and prefix not in PAIR:
        also = PAIR.names() if table is not PAIR else ()
        return str(table.unknown(prefix, f" in spec {spec!r}", also=also))
    try:
        check_spec(spec)
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    return None


def _check_aligners(config: ExperimentConfig, where: str) -> None:
    """Build each aligner once so that unknown kinds and misspelt parameters fail now."""
    from xmodal.align.registry import build_aligner

    for a in config.aligners:
        for metric in a.metrics or config.metrics:
            try:
                build_aligner(a.kind, metric=metric, **a.params)
            except (KeyError, TypeError, ValueError) as e:
                msg = e.args[0] if e.args else e
                raise ConfigError(f"{where}: aligners: {a.label} ({metric}): {msg}") from None
