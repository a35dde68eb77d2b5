"""Experiments: a validated config -> a grid of runs -> results tables and a run folder.

The runner (torch, the encoders, the aligners) loads on first use of its names, so reading a
config or a run folder stays light.
"""

from typing import TYPE_CHECKING, Any

from xmodal.experiments.config import ConfigError, ExperimentConfig, load_config, parse_config

if TYPE_CHECKING:
    from xmodal.experiments.runner import RunResult, run_experiment

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "RunResult",
    "load_config",
    "parse_config",
    "run_experiment",
]


def __getattr__(name: str) -> Any:
    if name in ("RunResult", "run_experiment"):
        from xmodal.experiments import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
