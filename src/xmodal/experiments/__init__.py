"""Experiments: a validated config -> a grid of runs -> results tables and a run folder."""

from xmodal.experiments.config import ConfigError, ExperimentConfig, load_config, parse_config
from xmodal.experiments.runner import RunResult, run_experiment

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "RunResult",
    "load_config",
    "parse_config",
    "run_experiment",
]
