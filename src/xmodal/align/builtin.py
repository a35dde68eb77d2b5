"""Imports every aligner module so that each registers its kind."""

from xmodal.align import (  # noqa: F401
    closed_form,
    conse,
    ensemble,
    identity,
    learned_metric,
    projection,
    relative,
)
