"""Aligner kinds by name, as used in configs and saved files; other packages add kinds
through the entry-point group `xmodal.aligners` (see docs/extending.md)."""

from __future__ import annotations

from typing import Any

from xmodal.align.base import Aligner
from xmodal.registry import Registry

#: class-level facts an aligner kind may declare, readable without building one
TRAITS = ("trained", "learned_scorer")


def _adopt(kind: str, cls: Any) -> type[Aligner]:
    if not (isinstance(cls, type) and issubclass(cls, Aligner)):
        raise TypeError(f"an aligner must be a subclass of xmodal.align.base.Aligner, got {cls!r}")
    cls.kind = kind
    return cls


ALIGNERS: Registry[type[Aligner]] = Registry(
    "aligner", "xmodal.aligners", "xmodal.align.builtin", _adopt
)
register = ALIGNERS.register


def build_aligner(kind: str, **params: Any) -> Aligner:
    return ALIGNERS[kind](**params)


def traits(kind: str) -> dict[str, Any]:
    """The TRAITS an aligner kind's class declares (e.g. {"learned_scorer": True})."""
    cls = ALIGNERS[kind]
    return {name: getattr(cls, name) for name in TRAITS if hasattr(cls, name)}


def accepts(kind: str, param: str) -> bool:
    """Whether an aligner kind takes this constructor parameter (e.g. `seed`, `progress`):
    a named one, or one its `**kwargs` are declared to take (`keyword_params`)."""
    import inspect

    cls = ALIGNERS[kind]
    return param in inspect.signature(cls.__init__).parameters or param in getattr(
        cls, "keyword_params", ()
    )


#: what a run knows and an aligner may take: its seed, whether to show progress, and the specs
#: of the encoders that made the vectors (for aligners that use the models themselves)
RUNTIME_PARAMS = ("seed", "progress", "image_encoder", "text_encoder")


def with_runtime(kind: str, params: dict[str, Any], **runtime: Any) -> dict[str, Any]:
    """`params` plus each runtime value the kind accepts and the user did not set."""
    unknown = set(runtime) - set(RUNTIME_PARAMS)
    if unknown:
        raise TypeError(f"not runtime parameters: {sorted(unknown)}")
    extra = {k: v for k, v in runtime.items() if k not in params and accepts(kind, k)}
    return {**params, **extra}
