"""Vision-language models from transformers: CLIP, SigLIP and BLIP's image-text retrieval heads.

Specs: "hf-clip:PATH_OR_NAME", "hf-siglip:PATH_OR_NAME", "hf-blip:PATH_OR_NAME". Each loads one
model with its image processor and tokenizer from a local folder (or, by name, from the local
Hugging Face cache or a reachable hub; "NAME@REVISION" pins the hub revision) and gives an image
and a text encoder that share the model.
Outputs are L2-normalised: these models compare images and texts by cosine similarity, and unit
vectors make every metric see the geometry the model was trained for.

This module also holds `VisionLanguageModel`, the shape every shared-space model adapter fills in
(open_clip's too), and the two thin encoders that expose one such model per modality.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from xmodal.encoders.base import ImageEncoder, LazyModel, TextEncoder, default_device
from xmodal.encoders.registry import register_pair
from xmodal.encoders.specs import check_source, split_revision


class VisionLanguageModel(LazyModel, ABC):
    """One model that embeds images and texts into a shared space of size `dim`; its weights
    load on first use (`ready()`), once for both of its encoders."""

    device: str

    @abstractmethod
    def preprocess(self, image) -> torch.Tensor:
        """One RGB PIL image -> a CHW float tensor."""

    @abstractmethod
    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """A NCHW batch -> N x dim embeddings."""

    @abstractmethod
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """A batch of strings -> N x dim embeddings."""


class SharedImageEncoder(ImageEncoder):
    """The image side of a VisionLanguageModel."""

    def __init__(self, spec: str, model: VisionLanguageModel):
        self.spec, self.model = spec, model
        self.device = model.device  # so the pipeline pins batches bound for a GPU

    def load(self) -> None:
        self.dim = self.model.ready().dim

    def preprocess(self, image) -> torch.Tensor:
        return self.model.ready().preprocess(image)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.embed_images(pixels)


class SharedTextEncoder(TextEncoder):
    """The text side of a VisionLanguageModel."""

    def __init__(self, spec: str, model: VisionLanguageModel):
        self.spec, self.model = spec, model

    def load(self) -> None:
        self.dim = self.model.ready().dim

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.embed_texts(texts)


def encoder_pair(spec: str, model: VisionLanguageModel) -> tuple[ImageEncoder, TextEncoder]:
    """The image and text encoders of one shared model, both named by `spec`."""
    return SharedImageEncoder(spec, model), SharedTextEncoder(spec, model)


@contextlib.contextmanager
def torchvision_advice() -> Iterator[None]:
    """Turn the failure of a torchvision built for another torch (a CUDA wheel beside a CPU
    torch: "operator torchvision::nms does not exist") into what to install instead."""
    try:
        yield
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        index = "cpu" if "+cpu" in torch.__version__ else "cu1xx (your CUDA)"
        raise RuntimeError(
            f"torchvision does not match torch {torch.__version__}: its compiled operators "
            f"fail to load ({e}). Install the matching build, e.g. pip install --force-reinstall "
            f"torchvision --index-url https://download.pytorch.org/whl/{index}"
        ) from None


class MissingExtra(ImportError, RuntimeError):
    """An optional library is not installed; the message names the extra that installs it.
    (A RuntimeError too, so a command reports it in one line like its other failures.)"""


def require_optional(module: str, extra: str) -> None:
    """Fail now, naming the extra, when a library an adapter will import is not installed
    (without importing it: the model, and the library, load on first use)."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(f"{module} is not installed: pip install 'xmodal[{extra}]'")


def import_optional(module: str, extra: str):
    """Import a library that only some adapters need, saying which extra installs it."""
    try:
        with torchvision_advice():
            return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{module} is not installed: pip install 'xmodal[{extra}]' ({e})") from e


def split_model_args(args: tuple[str, ...]) -> tuple[str, str | None]:
    """A spec's parts after the prefix -> (model name, what follows or None).

    The registry splits specs on every ':', but open_clip and timm model names may carry a
    scheme ("hf-hub:ORG/NAME", "local-dir:PATH") whose ':' belongs to the name.
    """
    if not args or not args[0]:
        raise ValueError("the spec names no model")
    head = 2 if args[0] in ("hf-hub", "local-dir") else 1
    return ":".join(args[:head]), (":".join(args[head:]) or None)


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFModel(VisionLanguageModel):
    """A transformers model with the image processor and tokenizer saved beside it."""

    model_class: str = ""
    padding: str | bool = True

    def __init__(self, source: str, device: str | None = None):
        name, self.revision = split_revision(source)
        self.source = check_source(name)
        self.device = device or default_device()

    def load(self) -> None:
        source, revision = self.source, self.revision
        with torchvision_advice():  # transformers imports torchvision when it is installed
            import transformers

            cls = getattr(transformers, self.model_class)
            model = cls.from_pretrained(source, revision=revision, dtype=torch.float32)
            self.model = model.to(self.device).eval()
            # the PIL backend gives the same pixels whether or not torchvision is installed
            self.images = transformers.AutoImageProcessor.from_pretrained(
                source, revision=revision, backend="pil"
            )
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=revision)
        text = self.model.config.text_config
        self.max_length = min(text.max_position_embeddings, self.tokenizer.model_max_length)
        self.dim = self._dim()

    @abstractmethod
    def _dim(self) -> int:
        """The size of the shared space, read off the model's config."""

    def preprocess(self, image) -> torch.Tensor:
        return self.images(images=image, return_tensors="pt")["pixel_values"][0]

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            texts,
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        keep = ("input_ids", "attention_mask")
        return {k: v.to(self.device) for k, v in enc.items() if k in keep}

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return F.normalize(feats.float(), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        feats = _features(self.model.get_text_features(**self._tokens(texts)))
        return F.normalize(feats.float(), dim=-1)


class HFClip(HFModel):
    model_class = "CLIPModel"

    def _dim(self) -> int:
        return self.model.config.projection_dim


class HFSiglip(HFModel):
    model_class = "SiglipModel"
    # SigLIP pools the last token and was trained on max_length padding
    padding = "max_length"

    def _dim(self) -> int:
        return self.model.config.vision_config.hidden_size


class HFBlip(HFModel):
    """BLIP's image-text contrastive heads: projected, normalised CLS tokens of each tower."""

    model_class = "BlipForImageTextRetrieval"

    def _dim(self) -> int:
        return self.model.config.image_text_hidden_size

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.model.vision_model(pixel_values=pixels.to(self.device)).last_hidden_state
        return F.normalize(self.model.vision_proj(hidden[:, 0, :]).float(), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        hidden = self.model.text_encoder(**self._tokens(texts)).last_hidden_state
        return F.normalize(self.model.text_proj(hidden[:, 0, :]).float(), dim=-1)


@register_pair("hf-clip")
def hf_clip(source: str, *, device: str | None = None) -> tuple[ImageEncoder, TextEncoder]:
    return encoder_pair(f"hf-clip:{source}", HFClip(source, device))


@register_pair("hf-siglip")
def hf_siglip(source: str, *, device: str | None = None) -> tuple[ImageEncoder, TextEncoder]:
    return encoder_pair(f"hf-siglip:{source}", HFSiglip(source, device))


@register_pair("hf-blip")
def hf_blip(source: str, *, device: str | None = None) -> tuple[ImageEncoder, TextEncoder]:
    return encoder_pair(f"hf-blip:{source}", HFBlip(source, device))
