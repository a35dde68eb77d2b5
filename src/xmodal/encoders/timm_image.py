"""timm image models as image encoders: spec "timm:MODEL_NAME[:CHECKPOINT_PATH]".

The encoder returns the model's pooled features (its classifier removed, `num_classes=0`) and
preprocesses with the model's own data config (input size, crop, interpolation, mean/std).
Without a checkpoint the pretrained weights come from the local Hugging Face cache or a reachable
hub (MODEL_NAME may also be "hf-hub:ORG/NAME"); a checkpoint file (safetensors or a state dict) is
loaded through timm's pretrained loader, which drops the classifier weights. Needs the optional
extra `timm` (timm + torchvision).
"""

from __future__ import annotations

from pathlib import Path

import torch

from xmodal.encoders.base import ImageEncoder, default_device
from xmodal.encoders.hf import import_optional, require_optional, split_model_args
from xmodal.encoders.registry import register_image


class TimmImageEncoder(ImageEncoder):
    def __init__(self, name: str, checkpoint: str | None = None, device: str | None = None):
        if checkpoint and not Path(checkpoint).expanduser().is_file():
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
        require_optional("timm", extra="timm")
        self.name, self.checkpoint = name, checkpoint
        self.spec = f"timm:{name}" + (f":{checkpoint}" if checkpoint else "")
        self.device = device or default_device()

    def load(self) -> None:
        timm = import_optional("timm", extra="timm")
        from timm.data import create_transform, resolve_model_data_config

        checkpoint = self.checkpoint
        overlay = {"file": str(Path(checkpoint).expanduser())} if checkpoint else None
        model = timm.create_model(
            self.name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay
        )
        self.model = model.to(self.device).eval()
        self._transform = create_transform(**resolve_model_data_config(model), is_training=False)
        # models with a pre-logits layer report its size apart from the trunk's num_features
        self.dim = getattr(model, "head_hidden_size", None) or model.num_features

    def preprocess(self, image) -> torch.Tensor:
        return self.ready()._transform(image)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels.to(self.device))


@register_image("timm")
def timm_image(*args: str, device: str | None = None) -> ImageEncoder:
    return TimmImageEncoder(*split_model_args(args), device=device)
