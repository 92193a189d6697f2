"""`sara stage2 …`: precompute the frozen encoders, train the DiT, generate videos."""

from __future__ import annotations

import argparse
import sys

from sara.config.arguments import (
    add_config_arguments,
    add_sampling_arguments,
    resume_and_overrides,
    sampling_from_arguments,
)


def register(commands: argparse._SubParsersAction) -> None:
    stage2 = commands.add_parser("stage2", help="the DiT with flow matching + routed TRD: precompute, train, generate")
    group = stage2.add_subparsers(dest="stage2", required=True)
    precompute = group.add_parser(
        "precompute", help="VAE latents, caption states, V-JEPA 2 tokens and saliency per clip, sharded"
    )
    add_config_arguments(precompute, "configs/stage2/tiny.yaml")
    precompute.set_defaults(handler=_precompute)

    train = group.add_parser("train", help="continual training of the DiT; exports a Diffusers pipeline")
    add_config_arguments(train, "configs/stage2/tiny.yaml", resume=True)
    train.set_defaults(handler=_train)

    generate = group.add_parser("generate", help="text-to-video with WanPipeline; mp4 and GIF per prompt")
    generate.add_argument("--pipeline", required=True, help="Diffusers-format Wan folder, e.g. RUN_DIR/pipeline")
    generate.add_argument("--prompt", nargs="+", help="prompts")
    generate.add_argument("--manifest", help="also every caption of this manifest")
    generate.add_argument("--out", required=True, help="folder for the videos")
    generate.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    generate.add_argument(
        "--ulysses", type=int, default=1, help="under torchrun: ranks that sample each video together"
    )
    add_sampling_arguments(generate)
    generate.set_defaults(handler=_generate)

    plan = group.add_parser(
        "plan", help="a run resolved for world sizes before any weight is read: splits, shapes, memory, problems"
    )
    add_config_arguments(plan, "configs/stage2/wan2.2-t2v-a14b.yaml")
    plan.add_argument("--world", type=int, nargs="+", default=[8, 16], help="processes (GPUs) in the run")
    plan.add_argument(
        "--shutdown-timeout", action="store_true", help="print only the seconds a launcher must wait for a checkpoint"
    )
    plan.set_defaults(handler=_plan)


def _precompute(args: argparse.Namespace) -> None:
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.stage2.cache import FeatureCache, precompute

    folder = precompute(load_config(Stage2Config, args.config, args.overrides))
    print(f"cache {folder}: {len(FeatureCache(folder))} clips")


def _train(args: argparse.Namespace) -> None:
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.parallel.world import is_main_process
    from sara.stage2.train import train

    resume, overrides = resume_and_overrides(args)
    run = train(load_config(Stage2Config, args.config, overrides), resume=resume)
    if is_main_process():
        print(f"run {run}; Diffusers-format pipeline in {run / 'pipeline'}")


def _generate(args: argparse.Namespace) -> None:
    from sara.data.manifest import load_manifest
    from sara.stage2.generate import generate

    prompts = list(args.prompt or [])
    if args.manifest:
        prompts += [r.prompt() for r in load_manifest(args.manifest).records]
    if not prompts:
        raise ValueError("give --prompt TEXT or --manifest FILE")
    sampling = sampling_from_arguments(args)
    written = generate(args.pipeline, prompts, args.out, sampling, args.device, ulysses=args.ulysses)
    print(f"wrote {len(written)} videos (mp4 and GIF) to {args.out}")


def _plan(args: argparse.Namespace) -> int:
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.stage2.plan import format_plan, plan_run

    config = load_config(Stage2Config, args.config, args.overrides)
    plans = [plan_run(config, world) for world in args.world]
    if args.shutdown_timeout:
        print(max(plan.shutdown_timeout for plan in plans))
    else:
        print("\n\n".join(format_plan(plan, args.config or "defaults") for plan in plans))
    failed = [plan for plan in plans if plan.problems]
    for plan in failed:
        for problem in plan.problems:
            print(f"sara: error: {plan.world} processes: {problem}", file=sys.stderr)
    return 2 if failed else 0
