"""Encoder adapters on tiny randomly initialised models built and saved by the tests (no hub).

Each adapter is loaded from its saved folder the way a user would, and checked against the
library's own forward pass on inputs prepared independently of the adapter.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.encoders import hf, openclip, registry, sbert, timm_image

WORDS = [
    "a",
    "the",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "circle",
    "square",
    "on",
    "of",
    "photo",
    "big",
    "small",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
TEXTS = ["a red cat", "the blue dog on a big square", "photo", "a small green circle of a dog"]
HEAVY = {"transformers", "sentence_transformers", "open_clip", "timm", "torchvision"}
WORDS = sorted({w for t in TEXTS for w in t.split()})
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[str]:
    """Five real PNG files: different sizes and content, one with transparency."""
    root = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(0)
    shapes = [(32, 32, 3), (40, 56, 3), (64, 48, 3), (32, 32, 4), (33, 90, 3)]
    paths = []
    for i, shape in enumerate(shapes):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def save_tokenizer(folder, **template) -> dict[str, int]:
    """A word-level fast tokenizer saved in `folder`; returns the special token ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        special_tokens=[(t, vocab[t]) for t in ("[CLS]", "[SEP]")], **template
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=16,
    )
    fast.save_pretrained(folder)
    return {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3, "sep_token_id": 3}


def tower(**extra) -> dict:
    return dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, **extra
    )


def hand_pixels(path: str) -> torch.Tensor:
    """What the saved processors must produce for a 32x32 RGB image: rescale, then normalise."""
    x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1).astype(np.float32))


def check_encoders(img_enc, txt_enc, paths, dim) -> tuple[np.ndarray, np.ndarray]:
    """Shapes, dtype, unit norm and batch-size invariance; returns the embeddings."""
    images = img_enc.encode_images(paths, batch_size=4)
    texts = txt_enc.encode_texts(TEXTS, batch_size=4)
    assert img_enc.dim == txt_enc.dim == dim
    assert images.shape == (len(paths), dim) and texts.shape == (len(TEXTS), dim)
    assert images.dtype == texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(img_enc.encode_images(paths, batch_size=1), images, atol=1e-5)
    np.testing.assert_allclose(txt_enc.encode_texts(TEXTS, batch_size=1), texts, atol=1e-5)
    assert np.abs(images - images[0]).max() > 1e-3, "different images gave the same vector"
    return images, texts


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("clip")
    ids = save_tokenizer(folder, single="[CLS] $A [SEP]")
    text = tower(vocab_size=len(SPECIALS + WORDS), max_position_embeddings=16, **ids)
    config = CLIPConfig(
        text_config=text, vision_config=tower(image_size=32, patch_size=8), projection_dim=24
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=MEAN,
        image_std=STD,
    ).save_pretrained(folder)
    return folder


def test_hf_clip_matches_the_model_forward(clip_dir, pngs):
    from transformers import AutoTokenizer, CLIPModel

    img_enc, txt_enc = hf.hf_clip(str(clip_dir), device="cpu")
    assert img_enc.spec == txt_enc.spec == f"hf-clip:{clip_dir}"
    assert img_enc.fingerprint != txt_enc.fingerprint
    images, texts = check_encoders(img_enc, txt_enc, pngs, dim=24)

    torch.testing.assert_close(img_enc.preprocess(Image.open(pngs[0])), hand_pixels(pngs[0]))
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokens = AutoTokenizer.from_pretrained(clip_dir)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=hand_pixels(pngs[0])[None],
        )
    np.testing.assert_allclose(images[0], out.image_embeds[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(texts, out.text_embeds.numpy(), atol=1e-5)


def test_hf_siglip_pads_to_max_length(tmp_path, pngs):
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    ids = save_tokenizer(tmp_path, single="$A [SEP]")
    text = tower(vocab_size=len(SPECIALS + WORDS), max_position_embeddings=16, **ids)
    config = SiglipConfig(text_config=text, vision_config=tower(image_size=32, patch_size=8))
    SiglipModel(config).save_pretrained(tmp_path)
    SiglipImageProcessor(
        size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
    ).save_pretrained(tmp_path)

    img_enc, txt_enc = hf.hf_siglip(str(tmp_path), device="cpu")
    images, texts = check_encoders(img_enc, txt_enc, pngs, dim=32)

    model = SiglipModel.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    tokens = tokenizer(TEXTS, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=hand_pixels(pngs[0])[None],
        )
    np.testing.assert_allclose(images[0], out.image_embeds[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(texts, out.text_embeds.numpy(), atol=1e-5)


def test_hf_blip_uses_the_contrastive_heads(tmp_path, pngs):
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
    )

    ids = save_tokenizer(tmp_path, single="[CLS] $A [SEP]")
    text = tower(
        vocab_size=len(SPECIALS + WORDS), max_position_embeddings=16, encoder_hidden_size=32, **ids
    )
    # BLIP's default vision init (std 1e-10) would make every image look the same
    vision = tower(image_size=32, patch_size=8, initializer_range=0.02)
    config = BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16)
    BlipForImageTextRetrieval(config).save_pretrained(tmp_path)
    BlipImageProcessor(
        size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
    ).save_pretrained(tmp_path)

    img_enc, txt_enc = hf.hf_blip(str(tmp_path), device="cpu")
    images, texts = check_encoders(img_enc, txt_enc, pngs, dim=16)

    model = BlipForImageTextRetrieval.from_pretrained(tmp_path).eval()
    tokens = AutoTokenizer.from_pretrained(tmp_path)(TEXTS, padding=True, return_tensors="pt")
    pixels = torch.stack([hand_pixels(pngs[0])] * len(TEXTS))
    with torch.no_grad():
        out = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
            use_itm_head=False,
        )
    # the retrieval head's output is image features @ text features.T
    np.testing.assert_allclose(images[0] @ texts.T, out.itm_score[0].numpy(), atol=1e-5)


def test_sentence_transformer_from_a_saved_folder(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    bert = tmp_path / "bert"
    save_tokenizer(bert, single="[CLS] $A [SEP]")
    BertModel(
        BertConfig(vocab_size=len(SPECIALS + WORDS), max_position_embeddings=16, **tower())
    ).save_pretrained(bert)
    st_dir = tmp_path / "st"
    SentenceTransformer(modules=[Transformer(str(bert)), Pooling(32, "mean")], device="cpu").save(
        str(st_dir)
    )

    enc = registry.TEXT["st"](str(st_dir), device="cpu")
    assert isinstance(enc, sbert.SentenceTransformerEncoder) and enc.spec == f"st:{st_dir}"
    vecs = enc.encode_texts(TEXTS, batch_size=4)
    assert vecs.shape == (len(TEXTS), 32) and vecs.dtype == np.float32
    np.testing.assert_allclose(enc.encode_texts(TEXTS, batch_size=1), vecs, atol=1e-5)

    # reference: masked mean of the BERT's last hidden states
    tokens = AutoTokenizer.from_pretrained(bert)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(bert)(**tokens).last_hidden_state
    mask = tokens["attention_mask"][..., None].float()
    np.testing.assert_allclose(vecs, ((hidden * mask).sum(1) / mask.sum(1)).numpy(), atol=1e-5)


def test_adapters_register_and_import_no_model_library():
    assert {"hf-clip", "hf-siglip", "hf-blip", "openclip"} <= set(registry.PAIR)
    assert "st" in registry.TEXT and "timm" in registry.IMAGE
    modules = [m.__name__ for m in (hf, openclip, sbert, timm_image)]
    code = f"import sys, {', '.join(modules)}; print(sorted(set(sys.modules) & {HEAVY!r}))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("factory", [hf.hf_clip, hf.hf_blip, registry.TEXT["st"]])
def test_a_missing_model_folder_is_named(tmp_path, factory):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        factory(str(tmp_path / "no-such-model"), device="cpu")


def test_timm_loads_a_checkpoint_and_drops_the_classifier(tmp_path, pngs):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file
    from timm.data import create_transform, resolve_model_data_config

    trained = timm.create_model("test_vit", pretrained=False, num_classes=10).eval()
    save_file(trained.state_dict(), tmp_path / "vit.safetensors")
    enc = registry.IMAGE["timm"]("test_vit", str(tmp_path / "vit.safetensors"), device="cpu")
    assert isinstance(enc, timm_image.TimmImageEncoder)
    assert enc.spec == f"timm:test_vit:{tmp_path / 'vit.safetensors'}" and enc.dim == 64
    vecs = enc.encode_images(pngs, batch_size=4)
    assert vecs.shape == (len(pngs), 64) and vecs.dtype == np.float32
    np.testing.assert_allclose(enc.encode_images(pngs, batch_size=1), vecs, atol=1e-5)

    # reference: the trained model's pre-logits features on its own eval transform
    transform = create_transform(**resolve_model_data_config(trained), is_training=False)
    pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in pngs[:3]])
    with torch.no_grad():
        ref = trained.forward_head(trained.forward_features(pixels), pre_logits=True)
    np.testing.assert_allclose(vecs[:3], ref.numpy(), atol=1e-5)


OPENCLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def test_openclip_from_a_local_dir(tmp_path, pngs):
    open_clip = pytest.importorskip("open_clip")
    import json

    from safetensors.torch import save_file

    preprocess = {"mean": MEAN, "std": STD}
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": OPENCLIP_CFG, "preprocess_cfg": preprocess})
    )
    trained = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    save_file(trained.state_dict(), tmp_path / "open_clip_model.safetensors")

    img_enc, txt_enc = registry.PAIR["openclip"]("local-dir", str(tmp_path), device="cpu")
    assert img_enc.spec == f"openclip:local-dir:{tmp_path}"
    images, texts = check_encoders(img_enc, txt_enc, pngs, dim=16)

    with torch.no_grad():
        ref_image = trained.encode_image(hand_pixels(pngs[0])[None], normalize=True)
        ref_texts = trained.encode_text(open_clip.tokenize(TEXTS, 16), normalize=True)
    np.testing.assert_allclose(images[0], ref_image[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(texts, ref_texts.numpy(), atol=1e-5)


def test_openclip_named_arch_with_a_checkpoint_file(tmp_path, pngs):
    open_clip = pytest.importorskip("open_clip")
    import json

    from safetensors.torch import save_file

    (tmp_path / "xmodal-tiny.json").write_text(json.dumps(OPENCLIP_CFG))
    open_clip.add_model_config(tmp_path / "xmodal-tiny.json")
    trained = open_clip.create_model("xmodal-tiny").eval()
    save_file(trained.state_dict(), tmp_path / "tiny.safetensors")

    img_enc, txt_enc = registry.PAIR["openclip"]("xmodal-tiny", str(tmp_path / "tiny.safetensors"))
    _, texts = check_encoders(img_enc, txt_enc, pngs[:2], dim=16)
    with torch.no_grad():
        ref = trained.encode_text(open_clip.tokenize(TEXTS, 16), normalize=True)
    np.testing.assert_allclose(texts, ref.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ViT-B-32",), ("ViT-B-32", None)),
        (("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-32", "laion2b_s34b_b79k")),
        (("hf-hub", "timm/ViT-B-16-SigLIP"), ("hf-hub:timm/ViT-B-16-SigLIP", None)),
        (("local-dir", "/m", "x.pt"), ("local-dir:/m", "x.pt")),
    ],
)
def test_split_model_args_keeps_schemes_in_the_name(args, expected):
    assert hf.split_model_args(args) == expected
