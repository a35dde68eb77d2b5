"""What the light entry points import: each heavy library loads where it is used, so `xmodal
--help` answers at once and `xmodal report` starts without torch, scikit-learn or POT."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ["torch", "sklearn", "scipy.stats", "ot", "pandas", "transformers", "sentence_transformers"]


def imported(module: str) -> set[str]:
    """The HEAVY modules (and numpy) that importing `module` loads, in a fresh interpreter."""
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(m for m in {[*HEAVY, 'numpy']!r} if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(run.stdout.split())


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("xmodal.cli", set()),  # --help and argument errors: not even numpy
        ("xmodal.report", {"numpy"}),
        ("xmodal.experiments.config", {"numpy"}),
        ("xmodal.encoders.builtin", {"numpy", "torch"}),  # the encoders, not their libraries
    ],
)
def test_light_entry_points_import_no_heavy_library(module, allowed):
    assert imported(module) <= allowed


def test_python_dash_m_xmodal_is_the_xmodal_command():
    run = subprocess.run(
        [sys.executable, "-m", "xmodal", "--help"], capture_output=True, text=True, check=True
    )
    assert run.stdout.startswith("usage: xmodal") and "run the experiment grid" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "xmodal", "nonsense"], capture_output=True)
    assert bad.returncode == 2
