"""Imports each encoder module so that it registers its spec prefixes."""

from xmodal.encoders import default_pair, hf, openclip, sbert, timm_image  # noqa: F401
