"""Spec strings -> encoders, through three registries of factories.

A spec is "name" or "name:arg[:arg...]", e.g. "minilm", "effnet-lite0",
"openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin", "hf-clip:/path/to/clip-vit-base-patch32".
A factory takes the spec's arguments as strings plus `device=` and returns an encoder (IMAGE,
TEXT) or an (image, text) encoder pair sharing one vision-language model (PAIR). Other packages
add factories through the entry-point groups `xmodal.image_encoders`, `xmodal.text_encoders` and
`xmodal.pair_encoders` (see docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xmodal.encoders.base import ImageEncoder, TextEncoder
from xmodal.registry import Registry

ImageFactory = Callable[..., ImageEncoder]
TextFactory = Callable[..., TextEncoder]
PairFactory = Callable[..., tuple[ImageEncoder, TextEncoder]]

# importing xmodal.encoders.builtin registers the built-in factories; heavy libraries load only
# when a factory runs
_BUILTIN = "xmodal.encoders.builtin"


def _callable(name: str, factory: Any) -> Any:
    if not callable(factory):
        raise TypeError(f"an encoder factory must be callable, got {type(factory).__name__}")
    return factory


IMAGE: Registry[ImageFactory] = Registry(
    "image encoder", "xmodal.image_encoders", _BUILTIN, _callable
)
TEXT: Registry[TextFactory] = Registry("text encoder", "xmodal.text_encoders", _BUILTIN, _callable)
PAIR: Registry[PairFactory] = Registry(
    "vision-language model", "xmodal.pair_encoders", _BUILTIN, _callable
)
register_image, register_text, register_pair = IMAGE.register, TEXT.register, PAIR.register


def _split(spec: str) -> tuple[str, list[str]]:
    prefix, _, rest = spec.partition(":")
    return prefix, (rest.split(":") if rest else [])


def _build(spec: str, table: Registry, side: int, device: str | None):
    prefix, args = _split(spec)
    if prefix in table:
        return table[prefix](*args, device=device)
    if prefix in PAIR:  # one side of a vision-language model
        return PAIR[prefix](*args, device=device)[side]
    raise table.unknown(prefix, f" in spec {spec!r}", also=PAIR.names())


def build_image_encoder(spec: str, device: str | None = None) -> ImageEncoder:
    return _build(spec, IMAGE, 0, device)


def build_text_encoder(spec: str, device: str | None = None) -> TextEncoder:
    return _build(spec, TEXT, 1, device)


def build_pair(
    image: str | None = None,
    text: str | None = None,
    model: str | None = None,
    device: str | None = None,
) -> tuple[ImageEncoder, TextEncoder]:
    """Either one vision-language `model` spec, or an `image` spec and a `text` spec."""
    if model is not None:
        prefix, args = _split(model)
        if prefix not in PAIR:
            raise PAIR.unknown(prefix, f" in spec {model!r}")
        return PAIR[prefix](*args, device=device)
    if image is None or text is None:
        raise ValueError("an encoder pair needs `model`, or both `image` and `text`")
    return build_image_encoder(image, device), build_text_encoder(text, device)
