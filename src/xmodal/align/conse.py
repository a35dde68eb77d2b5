"""ConSE: images placed in text space by the image model's own classifier.

An ImageNet classifier already says what an image shows, in words: its class names. Embedding
each name with the text encoder gives every class a text vector; an image becomes the
probability-weighted mean of the text vectors of its `top` most likely classes (Norouzi et al.,
"Zero-shot learning by convex combination of semantic embeddings", ICLR 2014). No training
pair is needed, and its errors differ from those of aligners learned from a few hundred pairs,
which makes it a strong ensemble member. Texts are left as the text encoder made them.
"""

from __future__ import annotations

import functools

import numpy as np

from xmodal.align.base import Aligner, FitContext
from xmodal.align.registry import register
from xmodal.embeddings import Embedded
from xmodal.similarity.metrics import Metric, l2_normalize

#: rows per block when mapping images (the logits block is rows x classes)
BLOCK = 4096


@register("conse")
class ConSE(Aligner):
    """The fit context names the encoder pair that made the vectors (a run fills it in from
    its config). The classifier and the embedded class names are saved with the aligner, and
    the encoder specs as `image_encoder_` / `text_encoder_`: a loaded one needs neither
    encoder."""

    fitted_attrs = ("image_encoder_", "text_encoder_")

    def __init__(
        self, metric: Metric | str = Metric.COSINE, top: int = 5, template: str = "A {}."
    ) -> None:
        if top < 1:
            raise ValueError(f"conse: top must be >= 1, got {top}")
        if "{}" not in template:
            raise ValueError(f"conse: template {template!r} needs a {{}} for the class name")
        self.metric = Metric(metric)
        self.top, self.template = top, template

    def fit(self, train: Embedded, context: FitContext | None = None) -> ConSE:
        context = context or FitContext()
        if context.image_encoder is None or context.text_encoder is None:
            raise ValueError(
                "conse needs the specs of the image and text encoders that made the vectors "
                "(FitContext `image_encoder`, `text_encoder`); `xmodal run` fills them in from "
                "an `image` + `text` encoder pair"
            )
        self.image_encoder_, self.text_encoder_ = context.image_encoder, context.text_encoder
        self.weight_, self.bias_, self.classes_ = class_text_vectors(
            self.image_encoder_, self.text_encoder_, self.template
        )
        for part, want in (("images", self.weight_.shape[1]), ("texts", self.classes_.shape[1])):
            got = getattr(train, part).shape[1]
            if got != want:
                raise ValueError(
                    f"conse: train.{part} are {got}-d but {self.image_encoder_} / "
                    f"{self.text_encoder_} give {want}-d vectors: not the encoders that made them"
                )
        return self

    def transform_images(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        blocks = [self._semantic(x[s : s + BLOCK]) for s in range(0, len(x), BLOCK)]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.classes_.shape[1]), x.dtype)

    def _semantic(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.weight_.T + self.bias_
        top = np.argpartition(-logits, self.top - 1, axis=1)[:, : self.top]
        z = np.take_along_axis(logits, top, axis=1)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return l2_normalize(np.einsum("nt,ntd->nd", p, self.classes_[top])).astype(np.float32)

    def transform_texts(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight_, "bias": self.bias_, "classes": self.classes_}

    def set_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.weight_, self.bias_ = tensors["weight"], tensors["bias"]
        self.classes_ = tensors["classes"]


@functools.cache
def class_text_vectors(
    image_encoder: str, text_encoder: str, template: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight, bias) of the image encoder's classifier and the text vector of each class
    name. Cached per process: every seed and ensemble of a run shares one computation."""
    from xmodal.encoders.registry import build_image_encoder, build_text_encoder

    head = build_image_encoder(image_encoder, device="cpu").classifier()
    if head is None:
        raise ValueError(
            f"conse: image encoder {image_encoder!r} has no classifier head with class names "
            "(effnet-lite0 has one)"
        )
    names = [template.format(label) for label in head.labels]
    classes = build_text_encoder(text_encoder, device="cpu").encode_texts(names)
    return head.weight, head.bias, classes
