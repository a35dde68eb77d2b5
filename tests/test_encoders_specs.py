"""Spec checks that load nothing, hub revisions, and optional libraries that are missing or
built for another torch."""

from __future__ import annotations

import pytest

from xmodal.encoders import hf, sbert
from xmodal.encoders.specs import check_spec, split_revision


def test_check_spec_fails_at_once_on_a_missing_local_path(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"x")
    for good in (
        "minilm",
        "hf-clip:openai/clip-vit-base-patch32@3d74acf",
        f"hf-clip:{tmp_path / 'clip'}",
        f"timm:resnet50:{tmp_path / 'w.safetensors'}",
        f"openclip:local-dir:{tmp_path / 'clip'}",
        "openclip:hf-hub:org/name",
    ):
        check_spec(good)
    for bad, missing in (
        (f"hf-clip:{tmp_path / 'typo'}", "typo"),
        ("timm:resnet50:weights.safetensors", "weights.safetensors"),
        (f"openclip:local-dir:{tmp_path / 'nope'}", "nope"),
        ("st:~/no-such-model-here", "no-such-model-here"),
    ):
        with pytest.raises(FileNotFoundError, match=missing):
            check_spec(bad)
    for malformed in ("", "hf-clip:", "timm:resnet50:"):
        with pytest.raises(ValueError, match="spec"):
            check_spec(malformed)


def test_split_revision():
    assert split_revision("org/name@v1.0") == ("org/name", "v1.0")
    assert split_revision("org/name") == ("org/name", None)
    assert split_revision("/models/a@b") == ("/models/a@b", None)  # a path keeps its '@'


class _Stop(Exception):
    pass


def test_hub_revision_reaches_every_download(monkeypatch):
    import sentence_transformers
    import transformers

    seen = []

    def record(name):
        def from_pretrained(source, **kw):
            seen.append((name, source, kw.get("revision")))
            if name == "tokenizer":
                raise _Stop
            return _Fake()

        return from_pretrained

    class _Fake:
        def to(self, device):
            return self

        def eval(self):
            return self

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", record("model"))
    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", record("images"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    with pytest.raises(_Stop):
        hf.HFClip("openai/clip-vit-base-patch32@3d74acf", device="cpu").ready()
    assert seen == [
        (part, "openai/clip-vit-base-patch32", "3d74acf")
        for part in ("model", "images", "tokenizer")
    ]

    def st(source, revision=None, device=None):
        seen.append(("st", source, revision))
        raise _Stop

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", st)
    with pytest.raises(_Stop):
        sbert.SentenceTransformerEncoder("sentence-transformers/all-MiniLM-L6-v2@main").ready()
    assert seen[-1] == ("st", "sentence-transformers/all-MiniLM-L6-v2", "main")


def test_a_missing_optional_library_names_its_extra(monkeypatch, capsys):
    with pytest.raises(ImportError, match=r"pip install 'xmodal\[timm\]'"):
        hf.import_optional("xmodal_no_such_module", extra="timm")
    from xmodal import cli

    def needs_timm(args):
        hf.import_optional("xmodal_no_such_module", extra="timm")

    monkeypatch.setattr(cli, "_cmd_data_info", needs_timm)
    assert cli.main(["data", "info", "folder:x"]) == 2  # one line, no traceback
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("xmodal: error: xmodal_no_such_module is not installed: pip install")


def test_a_torchvision_built_for_another_torch_says_what_to_install(tmp_path, monkeypatch):
    # what importing a CUDA torchvision beside a CPU torch raises
    (tmp_path / "broken_vision.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="torchvision does not match torch") as e:
        hf.import_optional("broken_vision", extra="timm")
    assert "download.pytorch.org/whl/" in str(e.value)
    with pytest.raises(RuntimeError, match="unrelated"), hf.torchvision_advice():
        raise RuntimeError("unrelated")
