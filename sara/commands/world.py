"""The flags of every command that renders a shapes world (`sara data synth`, `sara eval
shapes-set`): its backgrounds and the words its named entities take."""

from __future__ import annotations

import argparse

from sara.shapes.render import SynthSpec
from sara.shapes.vocabulary import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, WORLD_OPTIONS


def add_world_arguments(parser: argparse.ArgumentParser, default: SynthSpec) -> None:
    """``--backgrounds``, ``--kinds``, ``--colours`` and ``--motions``, defaulting to ``default``'s."""
    parser.add_argument(
        "--backgrounds", nargs="+", choices=BACKGROUNDS, default=default.backgrounds, help="kinds drawn"
    )
    parser.add_argument("--kinds", nargs="+", choices=SHAPES, default=default.kinds, help="shape kinds named")
    parser.add_argument("--colours", nargs="+", choices=tuple(COLOURS), default=default.colours, help="colours named")
    parser.add_argument(
        "--motions", nargs="+", choices=tuple(MOTIONS), default=default.motions, help='directions, e.g. "left to right"'
    )


def world_from_arguments(args: argparse.Namespace) -> dict:
    """The :data:`WORLD_OPTIONS` fields of a SynthSpec, as the flags gave them."""
    return {name: getattr(args, name) for name in WORLD_OPTIONS}
