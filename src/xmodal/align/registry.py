"""Aligner kinds by name, as used in configs and saved files, and what each kind is."""

from __future__ import annotations

from typing import Any

from xmodal.align.base import TRAITS, Aligner

ALIGNERS: dict[str, type[Aligner]] = {}


def register(kind: str):
    def deco(cls):
        cls.kind = kind
        ALIGNERS[kind] = cls
        return cls

    return deco


def aligner_class(kind: str) -> type[Aligner]:
    from xmodal.align import builtin  # noqa: F401  (registers the built-in kinds)

    if kind not in ALIGNERS:
        raise KeyError(f"unknown aligner {kind!r}; known: {sorted(ALIGNERS)}")
    return ALIGNERS[kind]


def build_aligner(kind: str, **params: Any) -> Aligner:
    cls = aligner_class(kind)
    unknown = set(params) - set(cls.param_names())
    if unknown:
        raise ValueError(
            f"aligner {kind!r} got unknown parameter(s) {sorted(unknown)}; "
            f"its parameters: {sorted(cls.param_names())}"
        )
    return cls(**params)


def aligner_traits(kind: str) -> dict[str, bool]:
    """What a kind is: trained (by gradient descent), learned_scorer (no single metric on one
    pair of vectors scores it), composite (built from member aligners)."""
    cls = aligner_class(kind)
    return {trait: bool(getattr(cls, trait)) for trait in TRAITS}
