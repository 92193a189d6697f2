"""Typed configuration: YAML files and ``key=value`` overrides validated into dataclasses."""

from sara.config.loader import ConfigError, config_to_yaml, load_config, option, save_config
from sara.config.schema import BudgetConfig, DemoConfig, GridConfig, SynthConfig, TRDConfig
from sara.config.stage1 import Stage1Config

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "DemoConfig",
    "GridConfig",
    "Stage1Config",
    "SynthConfig",
    "TRDConfig",
    "config_to_yaml",
    "load_config",
    "option",
    "save_config",
]
