"""Command-line arguments of every command that runs from a config: ``--config FILE``,
``key=value`` overrides and, for trainers, ``--resume``."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, example: str, resume: bool = False) -> None:
    """``--config`` (``example``: a shipped YAML), the overrides, and ``--resume`` if asked for."""
    parser.add_argument("--config", help=f"YAML file, e.g. {example} (default: built-in defaults)")
    if resume:
        parser.add_argument(
            "--resume", nargs="?", const="latest", help="continue from a checkpoint: latest (the default) or its folder"
        )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of any config key")


def resume_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``--resume``'s value and the overrides: ``--resume key=value …`` means ``--resume latest key=value …``."""
    if args.resume is not None and "=" in args.resume:
        return "latest", [args.resume, *args.overrides]
    return args.resume, args.overrides
