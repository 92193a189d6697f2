"""Command-line arguments shared by commands: ``--config FILE``, ``key=value`` overrides and,
for trainers, ``--resume``; the sampling settings of every command that generates videos."""

from __future__ import annotations

import argparse
from dataclasses import fields

from sara.config.sampling import SCHEDULERS, Sampling


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


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`Sampling` field, named, typed, defaulted and explained as the field."""
    defaults = Sampling()
    names = {"guidance_scale": "cfg", "guidance_scale_2": "cfg-2"}
    for field in fields(Sampling):
        flag = "--" + names.get(field.name, field.name).replace("_", "-")
        choices = SCHEDULERS if field.name == "scheduler" else None
        parser.add_argument(
            flag,
            dest=field.name,
            type=field.metadata["type"],
            default=getattr(defaults, field.name),
            choices=choices,
            help=field.metadata["help"],
        )


def sampling_from_arguments(args: argparse.Namespace) -> Sampling:
    return Sampling(**{field.name: getattr(args, field.name) for field in fields(Sampling)})
