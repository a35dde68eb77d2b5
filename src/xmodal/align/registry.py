"""Aligner kinds by name, as used in configs and saved files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xmodal.align.base import Aligner

ALIGNERS: dict[str, Callable[..., Aligner]] = {}


def register(kind: str):
    def deco(cls):
        cls.kind = kind
        ALIGNERS[kind] = cls
        return cls

    return deco


def build_aligner(kind: str, **params: Any) -> Aligner:
    from xmodal.align import builtin  # noqa: F401  (registers the built-in kinds)

    if kind not in ALIGNERS:
        raise KeyError(f"unknown aligner {kind!r}; known: {sorted(ALIGNERS)}")
    return ALIGNERS[kind](**params)


def accepts(kind: str, param: str) -> bool:
    """Whether an aligner kind takes this constructor parameter (e.g. `seed`, `progress`):
    a named one, or one its `**kwargs` are declared to take (`keyword_params`)."""
    import inspect

    from xmodal.align import builtin  # noqa: F401

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
