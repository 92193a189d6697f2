"""`sara moalign …`: MoAlign's motion head, fitted on a Stage 2 cache's teacher tokens and flow."""

from __future__ import annotations

import argparse
import json

from sara.config.arguments import add_config_arguments


def register(commands: argparse._SubParsersAction) -> None:
    moalign = commands.add_parser("moalign", help="MoAlign's motion head: the target of align.mode=moalign")
    group = moalign.add_subparsers(dest="moalign", required=True)
    train = group.add_parser(
        "train", help="fit the motion head on the cache's teacher tokens and optical flow (precompute.flow=true)"
    )
    add_config_arguments(train, "configs/stage2/tiny.yaml")
    train.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> None:
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.stage2.motion import fit_motion_head

    folder, report = fit_motion_head(load_config(Stage2Config, args.config, args.overrides))
    print(json.dumps(report["end_point_error"]))
    print(f"motion head: {folder}")
