"""Spec strings -> encoders. One small table maps a spec's prefix to the function that builds it.

A spec is "name" or "prefix:arg[:arg...]", e.g. "minilm", "effnet-lite0",
"openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin", "hf-clip:/path/to/clip-vit-base-patch32".
Vision-language models give both an image and a text encoder that share one model.
"""

from __future__ import annotations

from collections.abc import Callable

from xmodal.encoders.base import ImageEncoder, TextEncoder

ImageFactory = Callable[..., ImageEncoder]
TextFactory = Callable[..., TextEncoder]
PairFactory = Callable[..., tuple[ImageEncoder, TextEncoder]]

IMAGE: dict[str, ImageFactory] = {}
TEXT: dict[str, TextFactory] = {}
PAIR: dict[str, PairFactory] = {}


def register_image(prefix: str):
    def deco(fn: ImageFactory) -> ImageFactory:
        IMAGE[prefix] = fn
        return fn

    return deco


def register_text(prefix: str):
    def deco(fn: TextFactory) -> TextFactory:
        TEXT[prefix] = fn
        return fn

    return deco


def register_pair(prefix: str):
    def deco(fn: PairFactory) -> PairFactory:
        PAIR[prefix] = fn
        return fn

    return deco


def _split(spec: str) -> tuple[str, list[str]]:
    prefix, _, rest = spec.partition(":")
    return prefix, ([a for a in rest.split(":")] if rest else [])


def _load_builtins() -> None:
    # importing the modules registers their factories; heavy libraries load only when built
    from xmodal.encoders import builtin  # noqa: F401


def _build(spec: str, table: dict, side: int, role: str, device: str | None):
    _load_builtins()
    prefix, args = _split(spec)
    if prefix in table:
        return table[prefix](*args, device=device)
    if prefix in PAIR:  # one side of a vision-language model
        return PAIR[prefix](*args, device=device)[side]
    raise KeyError(f"unknown {role} encoder {spec!r}; known: {sorted(table) + sorted(PAIR)}")


def build_image_encoder(spec: str, device: str | None = None) -> ImageEncoder:
    return _build(spec, IMAGE, 0, "image", device)


def build_text_encoder(spec: str, device: str | None = None) -> TextEncoder:
    return _build(spec, TEXT, 1, "text", device)


def build_pair(
    image: str | None = None,
    text: str | None = None,
    model: str | None = None,
    device: str | None = None,
) -> tuple[ImageEncoder, TextEncoder]:
    """Either one vision-language `model` spec, or an `image` spec and a `text` spec."""
    _load_builtins()
    if model is not None:
        prefix, args = _split(model)
        if prefix not in PAIR:
            raise KeyError(f"unknown vision-language model {model!r}; known: {sorted(PAIR)}")
        return PAIR[prefix](*args, device=device)
    if image is None or text is None:
        raise ValueError("an encoder pair needs `model`, or both `image` and `text`")
    return build_image_encoder(image, device), build_text_encoder(text, device)
