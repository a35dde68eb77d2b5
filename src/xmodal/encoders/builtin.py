"""Imports each encoder module so that it registers its spec prefixes."""

from xmodal.encoders import (  # noqa: F401
    default_pair,
    hf,
    openclip,
    sbert,
    timm_image,
    zoo_image,
    zoo_text,
)
