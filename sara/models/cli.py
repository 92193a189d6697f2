"""`sara models …`: model presets."""

from __future__ import annotations

import argparse

from sara.models.presets import TINY


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model presets")
    group = models.add_subparsers(dest="models", required=True)
    tiny = group.add_parser("tiny", help="write a tiny preset (seeded random weights) as a local folder")
    tiny.add_argument("name", choices=sorted(TINY))
    tiny.add_argument("--out", required=True, help="folder to write")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_tiny)


def _tiny(args: argparse.Namespace) -> None:
    from sara.models.presets import write_tiny

    print(f"wrote tiny {args.name} to {write_tiny(args.name, args.out, args.seed)}")
