"""Any sentence-transformers model as a text encoder: spec "st:PATH_OR_NAME" ("NAME@REVISION"
pins a hub revision).

The model's own modules decide pooling and normalisation (all-MiniLM-L6-v2, say, ends in a
Normalize module; others return raw pooled vectors).
"""

from __future__ import annotations

from pathlib import Path

import torch

from xmodal.encoders.base import TextEncoder, default_device
from xmodal.encoders.registry import register_text
from xmodal.encoders.specs import check_source, split_revision


class SentenceTransformerEncoder(TextEncoder):
    """A SentenceTransformer loaded from a folder, or by name from the local cache or a hub."""

    def __init__(
        self,
        source: str | Path,
        spec: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.spec = spec or f"st:{source}"
        name, self.revision = split_revision(str(source))
        self.source = check_source(name)  # a missing folder fails now, not at the first caption
        self.device = device or default_device()
        self.batch_size = batch_size

    def locate(self) -> str:
        """The model folder or hub name (a subclass may find or unpack it here, on first use)."""
        return self.source

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        source = self.locate()
        self.model = SentenceTransformer(source, revision=self.revision, device=self.device)
        # renamed in sentence-transformers 6; the old name still works, with a warning
        size = getattr(self.model, "get_embedding_dimension", None)
        dim = (size or self.model.get_sentence_embedding_dimension)()
        if dim is None:
            raise ValueError(f"{source}: the model does not report its embedding size")
        self.dim = dim

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        # base.TextEncoder already batches; hand the whole batch to encode in one go
        return self.model.encode(
            texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False
        )


@register_text("st")
def sentence_transformer(source: str, *, device: str | None = None) -> TextEncoder:
    return SentenceTransformerEncoder(source, device=device)
