"""xmodal: cross-modal (image <-> text) representation alignment and retrieval."""

__version__ = "0.1.0"
