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
    from sara.models.motion import save_motion_head
    from sara.stage2.build import cache_dir, motion_head_folder
    from sara.stage2.cache import FeatureCache, fingerprint
    from sara.stage2.motion import train_motion_head

    config = load_config(Stage2Config, args.config, args.overrides)
    head, report = train_motion_head(config, FeatureCache(cache_dir(config), fingerprint(config)))
    folder = save_motion_head(head, motion_head_folder(config), report)
    print(json.dumps(report["end_point_error"]))
    print(f"motion head: {folder}")
