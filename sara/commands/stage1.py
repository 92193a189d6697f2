"""`sara stage1 …`: train, evaluate and draw the Semantic Aligner."""

from __future__ import annotations

import argparse

from sara.config.arguments import add_config_arguments, resume_and_overrides


def register(commands: argparse._SubParsersAction) -> None:
    stage1 = commands.add_parser("stage1", help="the Semantic Aligner: train, evaluate, draw")
    group = stage1.add_subparsers(dest="stage1", required=True)
    train = group.add_parser("train", help="train the aligner on frozen V-JEPA 2 features")
    add_config_arguments(train, "configs/stage1/tiny.yaml", resume=True)
    train.set_defaults(handler=_train)

    evaluate = group.add_parser("eval", help="held-out figures of a run; writes RUN_DIR/eval.json")
    evaluate.add_argument("--checkpoint", required=True, help="run folder (its latest checkpoint) or a checkpoint")
    evaluate.set_defaults(handler=_eval)

    infer = group.add_parser(
        "infer", help="figures per prompt: frames (+ masks), PCA of the enhanced features, saliency"
    )
    infer.add_argument("manifest", help="clips to draw; masks are overlaid where the manifest has them")
    infer.add_argument("--checkpoint", required=True, help="run folder (its latest checkpoint) or a checkpoint")
    infer.add_argument("--records", type=int, nargs="+", default=[0], help="record indices (default: 0)")
    infer.add_argument(
        "--prompt",
        nargs="+",
        help="prompts to draw instead of the record's entities (the full caption is always drawn)",
    )
    infer.add_argument("--out", help="folder for the figures (default: RUN_DIR/infer)")
    infer.add_argument("--columns", type=int, default=8, help="sampled frames in the PNG")
    infer.add_argument("--fps", type=float, default=8.0, help="frame rate of the GIF and MP4")
    infer.add_argument("--device", help="default: the run's device setting")
    infer.set_defaults(handler=_infer)


def _train(args: argparse.Namespace) -> None:
    from sara.config import Stage1Config, load_config
    from sara.stage1.train import train

    resume, overrides = resume_and_overrides(args)
    train(load_config(Stage1Config, args.config, overrides), resume=resume)


def _eval(args: argparse.Namespace) -> None:
    from sara.stage1.run import evaluate_run

    evaluate_run(args.checkpoint)


def _infer(args: argparse.Namespace) -> None:
    from sara.stage1.infer import infer

    written = infer(
        args.checkpoint, args.manifest, args.records, args.prompt, args.out, args.columns, args.fps, args.device
    )
    print(f"wrote {len(written)} figures (PNG, GIF, MP4) to {written[0].parent.parent}")
