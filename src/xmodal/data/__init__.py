"""Datasets of images and captions: one model (`Dataset`), one loader per format, safe decoding."""

from xmodal.data.dataset import Caption, Dataset, Image, Problem, split_ids, write_problems
from xmodal.data.images import ImageError, load_rgb
from xmodal.data.listing import Listing
from xmodal.data.loaders import FORMATS, data_root, describe, load_dataset, open_listing
from xmodal.data.tuxpaint import fetch_tuxpaint

__all__ = [
    "FORMATS",
    "Caption",
    "Dataset",
    "Image",
    "ImageError",
    "Listing",
    "Problem",
    "data_root",
    "describe",
    "fetch_tuxpaint",
    "load_dataset",
    "load_rgb",
    "open_listing",
    "split_ids",
    "write_problems",
]
