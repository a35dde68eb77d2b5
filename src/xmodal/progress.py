"""What a long command shows while it works: progress bars on a terminal only, and one line per
finished step (with counts and times) wherever stderr goes, so that a log stays short.

A base module: any stage may import it; it imports nothing from xmodal.
"""

from __future__ import annotations

import logging
import os
import sys


def on_terminal() -> bool:
    """Whether stderr is a terminal (bars redraw in place there; in a log each redraw is a line)."""
    return sys.stderr.isatty()


def bars(progress: bool) -> bool:
    """Whether to draw progress bars: asked for, and on a terminal."""
    return progress and on_terminal()


def note(message: str, progress: bool = True) -> None:
    """One line on stderr about a finished step (kept clear of any bar being drawn)."""
    if not progress:
        return
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def silence_libraries() -> None:
    """Quiet the model libraries' own messages and bars (weight loading, advisories): set before
    they are imported, and on their loggers if they already are."""
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "timm", "open_clip"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
