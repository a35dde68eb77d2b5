"""The experiment config: a YAML file validated before any work starts.

Errors name the file and the key path (e.g. `demo.yaml: aligners.0.metrics.1: ...`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

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

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class DatasetConfig(Strict):
    source: str = Field(description='"FORMAT:PATH" or "tuxpaint"')
    images: str | None = Field(None, description="image root for formats that need one")
    name: str | None = None
    split: SplitConfig = SplitConfig()
    options: dict[str, Any] = Field(default_factory=dict)

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


class ExperimentConfig(Strict):
    name: str = "experiment"
    datasets: list[DatasetConfig] = Field(min_length=1)
    encoders: list[EncoderConfig] = Field(min_length=1)
    aligners: list[AlignerConfig] = Field(min_length=1)
    metrics: list[MetricName] = Field(default_factory=lambda: [Metric.COSINE], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    geometry: bool = False
    cache_dir: str = "cache"
    runs_dir: str = "runs"
    device: str | None = None
    #: aligners fitted at once, one process each (the command line's --jobs overrides it)
    jobs: int = Field(1, ge=1)


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    return parse_config(raw, str(path))


def parse_config(raw: Any, where: str = "config") -> ExperimentConfig:
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
    return config


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
