"""Tux Paint stamps (Debian `tuxpaint-stamps-default`): one object image, one caption each.

Layout: `stamps/<category>/.../<name>.png` (or `.svg`) with `<name>.txt`, whose line 1 is the
English caption and whose later lines are translations `xx.utf8=...` (also `xx_YY`, `xx@variant`).
`<name>_mirror.png` files are Tux Paint's flipped variants, not stamps.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

from xmodal.data.dataset import Caption, Dataset, Image, Problem
from xmodal.data.folder import read_lines
from xmodal.files import atomic_write_bytes

PACKAGE = "tuxpaint-stamps-default"
STAMPS_SUBDIR = Path("usr/share/tuxpaint/stamps")
_TRANSLATION = re.compile(r"([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@\w+)?)\.utf8=(.*)")
_DOCTYPE = re.compile(rb"<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>", re.S)
_ENTITY = re.compile(rb'<!ENTITY\s+([\w.-]+)\s+"([^"&%<]*)"\s*>')


def fetch_tuxpaint(root: str | Path, deb: str | Path | None = None) -> Path:
    """Unpack the stamps package under `root/tuxpaint` and return its stamps folder.

    Downloads it with `apt-get download` (no root needed) unless `deb` names a downloaded
    package. Idempotent: an unpacked tree is reused; a partial unpack is never left in place.
    """
    target = Path(root) / "tuxpaint"
    stamps = target / STAMPS_SUBDIR
    if stamps.is_dir():
        return stamps
    if target.exists():
        raise RuntimeError(f"{target} exists but holds no {STAMPS_SUBDIR}; remove it and retry")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tuxpaint-") as tmp:
        package = Path(deb) if deb else _download(Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        _run(["dpkg-deb", "-x", str(package), str(unpacked)])
        if not (unpacked / STAMPS_SUBDIR).is_dir():
            raise RuntimeError(f"{package}: no {STAMPS_SUBDIR} inside; is it {PACKAGE}?")
        unpacked.rename(target)
    return stamps


def _download(folder: Path) -> Path:
    _run(["apt-get", "download", PACKAGE], cwd=folder)
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {PACKAGE} left no .deb in {folder}")
    return debs[-1]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(
            f"{cmd[0]} not found: fetching Tux Paint stamps needs Debian's apt-get and dpkg-deb; "
            f"elsewhere unpack {PACKAGE} yourself and load it with tuxpaint:PATH"
        )
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-800:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}): {detail}")


def stamps_dir(path: str | Path) -> Path:
    """The stamps folder of an unpacked package root, or `path` itself if it is one."""
    inner = Path(path) / STAMPS_SUBDIR
    return inner if inner.is_dir() else Path(path)


def load_tuxpaint(path: str | Path, render_dir: str | Path | None = None) -> Dataset:
    """One image and one English caption per stamp; translations by language tag.

    Ids are stamp paths relative to the stamps folder without suffix ("animals/birds/owl").
    SVG-only stamps are rasterised once into `render_dir` (needs cairosvg); with no
    `render_dir` they are skipped and counted in one problem.
    """
    stamps = stamps_dir(path)
    if not stamps.is_dir():
        raise FileNotFoundError(f"{stamps}: no Tux Paint stamps folder")
    problems: list[Problem] = []
    images, captions, translations = [], [], {}
    found, loose_pngs = _scan(stamps)
    unrendered = 0
    for txt, image_path in found:
        stamp_id = txt.relative_to(stamps).with_suffix("").as_posix()
        if image_path is None:
            problems.append(Problem(str(txt), "no image (.png or .svg) for this caption file"))
            continue
        text, translated = _read_caption(txt, problems)
        if not text:
            continue
        if image_path.suffix == ".svg":
            out = Path(render_dir, f"{stamp_id}.png") if render_dir else None
            image_path = _rasterised(image_path, out, problems) if out else None
            if image_path is None:
                unrendered += 1
                continue
        images.append(Image(stamp_id, image_path))
        captions.append(Caption(stamp_id, text, stamp_id))
        if translated:
            translations[stamp_id] = translated
    _note_skipped(problems, stamps, unrendered, render_dir, loose_pngs)
    return Dataset("tuxpaint", images, captions, problems, translations)


def _scan(stamps: Path) -> tuple[list[tuple[Path, Path | None]], int]:
    """Caption files with their image (.png, else .svg, else None); count of loose PNGs."""
    found = []
    loose_pngs = 0
    for folder, _, files in os.walk(stamps):
        names = set(files)
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext == ".png" and stem + ".txt" not in names and not stem.endswith("_mirror"):
                loose_pngs += 1
            elif ext == ".txt":
                image = next((stem + e for e in (".png", ".svg") if stem + e in names), None)
                found.append((Path(folder, name), Path(folder, image) if image else None))
    return sorted(found, key=lambda pair: pair[0]), loose_pngs


def _read_caption(txt: Path, problems: list[Problem]) -> tuple[str, dict[str, str]]:
    """Line 1 (the English caption) and the language-tagged translations of a stamp's .txt."""
    lines = read_lines(txt, problems)
    if not lines or lines[0][0] != 1:
        if not any(p.where == f"{txt}:1" for p in problems):  # else line 1's problem says why
            problems.append(Problem(str(txt), "no English caption on line 1", "stamp skipped"))
        return "", {}
    translations = {}
    for n, line in lines[1:]:
        m = _TRANSLATION.fullmatch(line)
        if m is None:
            problems.append(Problem(f"{txt}:{n}", "not a 'lang.utf8=text' line", "ignored"))
            continue
        text = m.group(2).strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].strip()
        if text:
            translations[m.group(1)] = text
    return lines[0][1], translations


def _note_skipped(
    problems: list[Problem],
    stamps: Path,
    unrendered: int,
    render_dir: str | Path | None,
    loose_pngs: int,
) -> None:
    if unrendered:
        if render_dir is None:
            why = "no render folder given"
        elif _cairosvg() is None:
            why = "cairosvg is not usable"
        else:
            why = "errors listed separately"
        problems.append(
            Problem(str(stamps), f"{unrendered} SVG-only stamp(s) not rasterised ({why})")
        )
    if loose_pngs:
        problems.append(
            Problem(str(stamps), f"{loose_pngs} PNG file(s) without a caption file", "ignored")
        )


@functools.cache
def _cairosvg() -> ModuleType | None:
    """cairosvg, imported only when an SVG must be rendered (the import alone takes ~1 s)."""
    try:
        import cairosvg
    except (ImportError, OSError):  # OSError: the package is there but libcairo is not
        return None
    return cairosvg


def _rasterised(svg: Path, out: Path, problems: list[Problem]) -> Path | None:
    """The cached PNG of an SVG stamp, rendered now if missing or stale; None if it cannot be."""
    if out.is_file() and out.stat().st_mtime >= svg.stat().st_mtime:
        return out
    cairosvg = _cairosvg()
    if cairosvg is None:
        return None
    try:
        png = cairosvg.svg2png(bytestring=_inline_entities(svg.read_bytes()), url=str(svg))
    except Exception as e:  # a broken SVG can fail in the XML parser or anywhere in cairo
        problems.append(Problem(str(svg), f"cannot rasterise SVG ({type(e).__name__}: {e})"))
        return None
    _write_atomic(out, png)
    return out


def _inline_entities(svg: bytes) -> bytes:
    """Expand plain internal entities (Illustrator's `&ns_svg;` ...) and drop the DOCTYPE.

    cairosvg's safe parser refuses any entity; external ones stay unresolved and fail to parse.
    """
    m = _DOCTYPE.search(svg)
    if m is None:
        return svg
    body = svg[: m.start()] + svg[m.end() :]
    for name, value in _ENTITY.findall(m.group(0)):
        body = body.replace(b"&" + name + b";", value)
    return body


def _write_atomic(path: Path, data: bytes) -> None:
    """A killed run never leaves a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
