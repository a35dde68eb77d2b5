"""open_clip models: spec "openclip:ARCH[:PRETRAINED]".

ARCH is an open_clip model name ("ViT-B-32"), or "hf-hub:ORG/NAME" / "local-dir:PATH" for a
model that carries its own config and weights. PRETRAINED is a pretrained tag
("laion2b_s34b_b79k", taken from the local cache or a reachable hub) or a checkpoint file; left
out, the weights come with ARCH (hf-hub, local-dir) or are random. Images go through the model's
own evaluation transform. Embeddings are L2-normalised, as open_clip computes them for retrieval.
Needs the optional extra `openclip` (open_clip_torch + torchvision).
"""

from __future__ import annotations

import torch

from xmodal.encoders.base import ImageEncoder, TextEncoder, default_device
from xmodal.encoders.hf import (
    VisionLanguageModel,
    encoder_pair,
    import_optional,
    require_optional,
    split_model_args,
)
from xmodal.encoders.registry import register_pair
from xmodal.encoders.specs import check_source


class OpenCLIP(VisionLanguageModel):
    def __init__(self, arch: str, pretrained: str | None = None, device: str | None = None):
        if arch.startswith("local-dir:"):
            check_source(arch.removeprefix("local-dir:"))
        self.arch, self.pretrained = arch, check_source(pretrained) if pretrained else None
        require_optional("open_clip", extra="openclip")
        self.device = device or default_device()

    def load(self) -> None:
        open_clip = import_optional("open_clip", extra="openclip")
        model, _, self._transform = open_clip.create_model_and_transforms(
            self.arch, pretrained=self.pretrained, device=self.device
        )
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(self.arch)
        with torch.inference_mode():  # open_clip has no one attribute for the shared size
            self.dim = int(self.embed_texts([""]).shape[1])

    def preprocess(self, image) -> torch.Tensor:
        return self._transform(image)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device), normalize=True)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)


@register_pair("openclip")
def openclip(*args: str, device: str | None = None) -> tuple[ImageEncoder, TextEncoder]:
    arch, pretrained = split_model_args(args)
    spec = f"openclip:{arch}" + (f":{pretrained}" if pretrained else "")
    return encoder_pair(spec, OpenCLIP(arch, pretrained, device))
