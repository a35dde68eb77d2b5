"""Imports every aligner module so that each registers its kind."""

from xmodal.align import closed_form, identity, learned_metric, projection, relative  # noqa: F401
