"""Aligner kinds by name, as used in configs and saved files, and what each kind is; other
packages add kinds through the entry-point group `xmodal.aligners` (see docs/extending.md)."""

from __future__ import annotations

from typing import Any

from xmodal.align.base import TRAITS, Aligner
from xmodal.registry import Registry


def _adopt(kind: str, cls: Any) -> type[Aligner]:
    if not (isinstance(cls, type) and issubclass(cls, Aligner)):
        raise TypeError(f"an aligner must be a subclass of xmodal.align.base.Aligner, got {cls!r}")
    cls.kind = kind
    return cls


ALIGNERS: Registry[type[Aligner]] = Registry(
    "aligner", "xmodal.aligners", "xmodal.align.builtin", _adopt
)
register = ALIGNERS.register


def aligner_class(kind: str) -> type[Aligner]:
    """The class registered under `kind` (an unknown kind lists the known ones)."""
    return ALIGNERS[kind]


def build_aligner(kind: str, **params: Any) -> Aligner:
    cls = aligner_class(kind)
    unknown = set(params) - set(cls.param_names())
    if unknown:
        raise ValueError(
            f"aligner {kind!r} got unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"its parameters: {', '.join(sorted(cls.param_names()))}"
        )
    return cls(**params)


def aligner_traits(kind: str) -> dict[str, bool]:
    """What a kind is: trained (by gradient descent), learned_scorer (no single metric on one
    pair of vectors scores it), composite (built from member aligners)."""
    cls = aligner_class(kind)
    return {trait: bool(getattr(cls, trait)) for trait in TRAITS}
