"""Cheap checks of encoder spec strings: no model, no heavy import.

A spec is "name" or "prefix:arg[:arg...]". An argument that looks like a local path (it starts
with "/", "." or "~", or ends in a weights suffix) must exist: a typo fails before a run starts,
not minutes into it. A hub model name may carry a revision, "NAME@REVISION" (a tag, branch or
commit), which pins the download: "hf-clip:openai/clip-vit-base-patch32@3d74acf".
"""

from __future__ import annotations

from pathlib import Path

WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")
# name schemes of open_clip and timm whose ':' belongs to the model name
_SCHEMES = ("hf-hub", "local-dir")


def looks_like_path(arg: str) -> bool:
    return arg.startswith(("/", ".", "~")) or arg.lower().endswith(WEIGHT_SUFFIXES)


def split_revision(source: str) -> tuple[str, str | None]:
    """ "NAME@REVISION" -> (NAME, REVISION); a local path, or a name without '@', has none."""
    name, at, revision = source.rpartition("@")
    if not at or looks_like_path(source) or not name or not revision:
        return source, None
    return name, revision


def check_source(source: str) -> str:
    """A source that looks like a path must exist: say so, rather than ask a hub for it.
    Returns it with '~' expanded."""
    if looks_like_path(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{source}: no such model file or folder")
        return str(path)
    return source


def check_spec(spec: str) -> None:
    """Raise ValueError for a malformed spec, FileNotFoundError for a local path that is not
    there; loads nothing, so config validation can call it for every encoder at once."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an encoder spec must be a non-empty string, got {spec!r}")
    prefix, colon, rest = spec.partition(":")
    args = rest.split(":") if colon else []
    if not prefix or any(not a for a in args):
        raise ValueError(f"encoder spec {spec!r} has an empty part (a stray ':'?)")
    if args and args[0] in _SCHEMES and len(args) > 1:
        args = [f"{args[0]}:{args[1]}", *args[2:]]
    for arg in args:
        if arg.startswith("local-dir:"):
            arg = arg.removeprefix("local-dir:")
            if not Path(arg).expanduser().is_dir():
                raise FileNotFoundError(f"{arg}: no such model folder (in spec {spec!r})")
            continue
        try:
            check_source(split_revision(arg)[0])
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (in spec {spec!r})") from None
