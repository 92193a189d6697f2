"""YAML → typed config: OmegaConf loading, ``key=value`` overrides, one-line errors.

Precedence is command line > file > dataclass defaults. OmegaConf checks keys and types
while merging into the structured schema; the ``choices`` / bounds that a field declares
in its metadata (see :func:`option`) are checked afterwards. Every error is a single
line that names the file (or the command line) and the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException

from sara.run_dir import RunDir

T = TypeVar("T")
COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """A config file or override that cannot become a typed config; the message is one line."""


def option(
    default: Any,
    *,
    choices: Sequence[Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
):
    """A dataclass field whose value (or each list item) is checked against ``choices`` or
    bounds when loaded."""
    bounds = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    checks = {k: v for k, v in bounds.items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=checks)
    return dataclasses.field(default=default, metadata=checks)


def _fields_at(schema: type, parent: str) -> list[str]:
    """Field names of the dataclass reached from ``schema`` by the dotted ``parent`` path."""
    node = schema
    for part in filter(None, parent.split(".")):
        node = typing.get_type_hints(node).get(part)
        if not dataclasses.is_dataclass(node):
            return []
    return [f.name for f in dataclasses.fields(node)]


def _unknown_key(schema: type, key: str) -> str:
    parent, _, name = key.rpartition(".")
    valid = _fields_at(schema, parent)
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"unknown key; did you mean '{prefix}{close[0]}'?"
    return f"unknown key; valid keys here: {', '.join(valid)}"


def _one_line(exc: OmegaConfBaseException, schema: type) -> str:
    message = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
    if isinstance(exc, ConfigKeyError):
        return _unknown_key(schema, _key_of(exc))
    if isinstance(exc, InterpolationResolutionError) and "Environment variable" in message:
        variable = message.split("'")[1]
        return f"environment variable '{variable}' is not set"
    return message


def _key_of(exc: OmegaConfBaseException) -> str:
    return getattr(exc, "full_key", None) or "<root>"


def _check_field(value: Any, metadata: dict, key: str) -> str | None:
    """The problem with ``value`` under the field's declared checks, or ``None``."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if "choices" in metadata and any(v not in metadata["choices"] for v in items):
        options = ", ".join(str(c) for c in metadata["choices"])
        return f"{key}: must be one of {options}; got {value!r}"
    for bound, holds, text in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        if bound in metadata:
            if not all(holds(v, metadata[bound]) for v in items):
                return f"{key}: must be {text} {metadata[bound]}; got {value!r}"
    return None


def _validate(config: Any, prefix: str = "") -> tuple[str, str] | None:
    """First ``(key, problem)`` found by walking the dataclass tree, or ``None``."""
    for f in dataclasses.fields(config):
        key = f"{prefix}{f.name}"
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found = _validate(value, prefix=f"{key}.")
            if found:
                return found
        elif problem := _check_field(value, dict(f.metadata), key):
            return key, problem
    return None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got a list")
    return data


def _parse_overrides(overrides: Sequence[str]) -> Any:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{COMMAND_LINE}: override {item!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{COMMAND_LINE}: {str(exc).splitlines()[0]}") from None


def _merge(base: Any, other: Any, source: str, schema: type) -> Any:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_key_of(exc)}: {_one_line(exc, schema)}") from None
    except (TypeError, ValueError) as exc:  # e.g. a mapping given where a list or a value belongs
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (YAML, optional) and ``key=value`` overrides into an instance of ``schema``.

    Raises:
        ConfigError: one line naming the file (or command line) and the key.
    """
    source = str(path) if path is not None else "defaults"
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = _merge(merged, _read_yaml(Path(path)), source, schema)
    merged = _merge(merged, _parse_overrides(overrides), COMMAND_LINE, schema)
    overridden = {item.split("=", 1)[0] for item in overrides}
    try:
        config = OmegaConf.to_object(merged)  # resolves interpolations such as ${oc.env:VAR}
    except OmegaConfBaseException as exc:
        key = _key_of(exc)
        raise ConfigError(f"{COMMAND_LINE if key in overridden else source}: {key}: {_one_line(exc, schema)}") from None
    if found := _validate(config):
        key, problem = found
        raise ConfigError(f"{COMMAND_LINE if key in overridden else source}: {problem}")
    return config


def config_to_yaml(config: Any) -> str:
    """The resolved config as YAML (what runs write beside their outputs and checkpoints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: Any, run_dir: str | Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml``; returns the path."""
    path = RunDir(run_dir).config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_yaml(config))
    return path
