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
    """Whether an aligner kind takes this constructor parameter (e.g. `seed`, `progress`)."""
    import inspect

    from xmodal.align import builtin  # noqa: F401

    params = inspect.signature(ALIGNERS[kind].__init__).parameters
    return param in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
