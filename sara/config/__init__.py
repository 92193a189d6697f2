"""Typed configuration: YAML files and ``key=value`` overrides validated into dataclasses."""

from sara.config.loader import ConfigError, config_to_yaml, load_config, option, save_config
from sara.config.schema import BudgetConfig, DemoConfig, TRDConfig

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "DemoConfig",
    "TRDConfig",
    "config_to_yaml",
    "load_config",
    "option",
    "save_config",
]
