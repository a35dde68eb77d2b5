"""A folder of images with sidecar captions: `<stem>.txt` beside each image, one caption a line."""

from __future__ import annotations

from pathlib import Path

from xmodal.data.dataset import Caption, Dataset, Image, Problem, caption_text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})


def read_lines(path: Path, problems: list[Problem]) -> list[tuple[int, str]]:
    """The cleaned non-empty lines of a text file with their 1-based line numbers.

    A line that is not UTF-8 or holds a control character becomes a problem naming file:line;
    the other lines are kept.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        problems.append(Problem(str(path), f"cannot read ({e.strerror or e})"))
        return []
    lines = []
    for n, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8-sig" if n == 1 else "utf-8").strip()
        except UnicodeDecodeError as e:
            problems.append(Problem(f"{path}:{n}", f"not UTF-8 ({e.reason} at byte {e.start})"))
            continue
        if text and (caption := caption_text(text, f"{path}:{n}", problems)) is not None:
            lines.append((n, caption))
    return lines


def load_folder(path: str | Path) -> Dataset:
    """Every image under `path` (recursive) with the captions in its sidecar `.txt`.

    Image ids are paths relative to `path` without the suffix; caption ids add `#<line>`.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    problems: list[Problem] = []
    images: list[Image] = []
    captions: list[Caption] = []
    owner: dict[Path, Path] = {}  # sidecar -> the image that claimed it
    for file in sorted(root.rglob("*")):
        if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
            continue
        sidecar = file.with_suffix(".txt")
        if sidecar in owner:
            problems.append(
                Problem(str(file), f"{sidecar.name} already belongs to '{owner[sidecar]}'")
            )
            continue
        owner[sidecar] = file
        if not sidecar.is_file():
            problems.append(Problem(str(file), f"no caption file {sidecar.name}"))
            continue
        known = len(problems)
        lines = read_lines(sidecar, problems)
        if not lines:
            if len(problems) == known:  # else its lines' problems already say why
                problems.append(Problem(str(sidecar), "no caption (empty file)", "image skipped"))
            continue
        image_id = file.relative_to(root).with_suffix("").as_posix()
        images.append(Image(image_id, file))
        captions.extend(Caption(f"{image_id}#{n}", text, image_id) for n, text in lines)
    for orphan in sorted(set(root.rglob("*.txt")) - owner.keys()):
        problems.append(Problem(str(orphan), "caption file with no image", "ignored"))
    return Dataset(root.resolve().name, images, captions, problems)
