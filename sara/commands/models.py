"""`sara models …`: model presets, and Wan DiTs from single-file checkpoints."""

from __future__ import annotations

import argparse

from sara.models.presets import TINY


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model presets, single-file Wan checkpoints")
    group = models.add_subparsers(dest="models", required=True)
    tiny = group.add_parser("tiny", help="write a tiny preset (seeded random weights) as a local folder")
    tiny.add_argument("name", choices=sorted(TINY))
    tiny.add_argument("--out", required=True, help="folder to write")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_tiny)

    single = group.add_parser(
        "from-single-file", help="a Diffusers Wan folder from single-file DiT checkpoints (ComfyUI or original)"
    )
    single.add_argument("files", nargs="+", help="one .safetensors per expert: high-noise first for A14B")
    single.add_argument("--base", required=True, help="Diffusers folder of the same model: config and other parts")
    single.add_argument("--out", required=True, help="the folder to write (its VAE, text encoder, … link to --base)")
    single.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="stored precision")
    single.set_defaults(handler=_single_file)


def _tiny(args: argparse.Namespace) -> None:
    from sara.models.presets import write_tiny

    print(f"wrote tiny {args.name} to {write_tiny(args.name, args.out, args.seed)}")


def _single_file(args: argparse.Namespace) -> None:
    import torch

    from sara.models.single_file import wan_from_single_file

    out = wan_from_single_file(args.base, args.out, args.files, getattr(torch, args.dtype))
    print(f"wrote {out}: {len(args.files)} DiT(s) from {', '.join(args.files)}; other components linked to {args.base}")
