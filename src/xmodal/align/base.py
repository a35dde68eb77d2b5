"""The aligner shape: fit on training pairs, map each modality into a space where a metric
(or a learned scorer) compares them; saved as safetensors + a JSON header.

Conventions (scikit-learn): hyper-parameters only in __init__, each stored under its own name
(so `get_params` reads them from the constructor's signature and none can be lost on save),
learned state in attributes ending in "_", fit returns self. What a fit needs besides the
pairs and the hyper-parameters (seed, device, validation pairs, ...) is its `FitContext`.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as safetensors_bytes

from xmodal.embeddings import Embedded
from xmodal.files import (
    IntegrityError,
    atomic_write_bytes,
    require_finite,
    sha256_arrays,
    sha256_bytes,
)
from xmodal.similarity.metrics import Metric
from xmodal.similarity.ranking import Scorer

#: the class attributes that say what kind of aligner a class is (see `Aligner`)
TRAITS = ("trained", "learned_scorer", "composite")


def primary_columns(ks: Sequence[int]) -> list[str]:
    """The validation scores a fit may select on (higher is better): RSUM, each direction's
    Recall@K for the run's K, and each direction's MRR."""
    recalls = [f"{d}_R@{k}" for d in ("t2i", "i2t") for k in ks]
    return ["rsum", *recalls, "t2i_MRR", "i2t_MRR"]


@dataclass(frozen=True)
class FitContext:
    """What a fit may use besides the training pairs and the hyper-parameters: not saved with
    the model, and never part of `get_params`."""

    seed: int = 0
    progress: bool = False
    #: torch device for trained aligners (None: cuda when present, else cpu)
    device: str | None = None
    #: validation pairs, for early stopping and model selection only
    val: Embedded | None = None
    #: Recall@K cut-offs of the run, and the score that early stopping and selection maximise
    ks: tuple[int, ...] = (1, 5, 10)
    primary: str = "rsum"
    #: specs of the encoders that made the vectors, for aligners that use the models themselves
    image_encoder: str | None = None
    text_encoder: str | None = None
    #: what a progress bar calls this fit (e.g. "fit 3/8: mlp / cosine / seed 0")
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"fit context: ks must be Recall@K cut-offs >= 1, got {self.ks}")
        if self.primary not in primary_columns(self.ks):
            raise ValueError(
                f"fit context: primary {self.primary!r} is not a score of this run; with ks "
                f"{list(self.ks)} choose one of {primary_columns(self.ks)}"
            )


class IncompatibleParams(ValueError):
    """Hyper-parameters the data they meet cannot take (a CCA `dim` above the smaller side's
    dimension): a run records the fit as failed with this reason and goes on to the others."""


class FitDiverged(RuntimeError):
    """A fit whose state stopped being finite (exploding loss or weights): it has no model to
    report, and must never be scored as if it had one."""

    def __init__(self, kind: str, epoch: int | None, reason: str):
        self.kind, self.epoch, self.reason = kind, epoch, reason
        where = f" at epoch {epoch}" if epoch is not None else ""
        super().__init__(f"aligner {kind!r} diverged{where}: {reason}")


class Aligner(ABC):
    """Maps image and text vectors into one comparable space."""

    #: the registry name used in configs and saved files
    kind: ClassVar[str]
    metric: Metric = Metric.COSINE
    #: traits (TRAITS), read by `xmodal.align.registry.aligner_traits`:
    #: learned by gradient training (else closed form or no fit at all)
    trained: ClassVar[bool] = False
    #: `scorer()` is not `metric` on one pair of vectors (a learned network, or a fusion of
    #: several spaces): no vector index serves it
    learned_scorer: ClassVar[bool] = False
    #: built from other aligners (its members)
    composite: ClassVar[bool] = False
    #: learned attributes that are not arrays (saved in the JSON header, e.g. provenance)
    fitted_attrs: ClassVar[tuple[str, ...]] = ()

    def fit(self, train: Embedded, context: FitContext | None = None) -> Self:
        """Learn from the training pairs; `context.val` is only for model selection/early
        stopping."""
        return self

    @abstractmethod
    def transform_images(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def transform_texts(self, y: np.ndarray) -> np.ndarray: ...

    def scorer(self) -> Scorer:
        """How transformed texts and images are compared (the metric; learned scorers override)."""
        from xmodal.similarity import block_scores

        metric = self.metric
        return lambda q, g: block_scores(q, g, metric)

    def transform(self, data: Embedded) -> Embedded:
        return Embedded(
            self.transform_images(data.images), self.transform_texts(data.texts), data.caption_image
        )

    # hyper-parameters: the constructor's signature is their only list --------------------
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The constructor's parameters; a `**kwargs` passes on to the parent class's
        constructor, whose parameters count too."""
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or not issubclass(klass, Aligner):
                continue
            params = list(inspect.signature(init).parameters.values())[1:]
            if any(p.kind is p.VAR_POSITIONAL for p in params):
                raise TypeError(f"{klass.__name__}.__init__: aligners take no *args")
            names += [p.name for p in params if p.kind is not p.VAR_KEYWORD and p.name not in names]
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
        return tuple(names)

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Self:
        """Rebuild this aligner with some parameters changed (validated like a new one; a
        fit does not survive it)."""
        unknown = set(params) - set(self.param_names())
        if unknown:
            raise ValueError(f"aligner {self.kind!r} has no parameter(s) {sorted(unknown)}")
        fresh = type(self)(**(self.get_params() | params))
        self.__dict__.clear()
        self.__dict__.update(vars(fresh))
        return self

    # persistence: hyper-parameters in the JSON header, learned arrays as tensors -----------
    def state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:  # noqa: B027 (stateless default)
        """Restore what `state` returned; aligners without learned arrays have nothing to do."""

    def fitted_info(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.fitted_attrs}

    def set_fitted_info(self, info: dict[str, Any]) -> None:
        for name in self.fitted_attrs:
            setattr(self, name, info[name])

    def require_finite_state(self) -> Self:
        """Raise FitDiverged when a learned array holds NaN or inf."""
        for name, a in self.state().items():
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                raise FitDiverged(self.kind, None, f"learned array {name} holds NaN or inf")
        return self

    def save(self, path: str | Path) -> None:
        """Write atomically; the header holds the parameters and one checksum of the header
        and the arrays together."""
        tensors = {k: np.ascontiguousarray(v) for k, v in self.state().items()}
        meta = {"kind": self.kind, "params": self.get_params(), "fitted": self.fitted_info()}
        meta["sha256"] = _file_digest(meta, tensors)
        # bytes first: safetensors' own file writer makes the file private (0600)
        atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"xmodal": json.dumps(meta)}))


def _file_digest(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 of the header (all but its checksum, canonical JSON) and of the arrays."""
    header = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True)
    return sha256_bytes(f"{header}|{sha256_arrays(tensors)}".encode())


def load_aligner(path: str | Path) -> Aligner:
    """Rebuild a saved aligner (no pickle: hyper-parameters are JSON, arrays are safetensors).
    A file that does not read back as written raises IntegrityError naming it."""
    from xmodal.align.registry import aligner_class

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = (f.metadata() or {}).get("xmodal")
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        meta = json.loads(header) if header is not None else None
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(path, f"not a readable aligner file ({e})") from None
    if not isinstance(meta, dict) or not {"kind", "params"} <= set(meta):
        raise IntegrityError(path, "no xmodal aligner header (kind, params, checksum)")
    if "sha256" not in meta:
        raise IntegrityError(path, "saved without a checksum (an older xmodal): fit and save again")
    if _file_digest(meta, tensors) != meta["sha256"]:
        raise IntegrityError(path, "checksum mismatch: the file is corrupt or was changed")
    require_finite(path, tensors)
    kind = meta["kind"]
    try:
        cls = aligner_class(kind)
    except KeyError as e:
        raise IntegrityError(path, e.args[0]) from None
    try:
        aligner = cls(**meta["params"])
    except (TypeError, ValueError) as e:
        raise IntegrityError(path, f"its {kind!r} parameters are refused: {e}") from None
    aligner.set_fitted_info(meta.get("fitted", {}))
    aligner.set_state(tensors)
    return aligner
