"""Imports every aligner module so that each registers its kind."""

from xmodal.align import identity  # noqa: F401
