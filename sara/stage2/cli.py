"""`sara stage2 …`: precompute the frozen encoders, train the DiT, generate videos."""

from __future__ import annotations

import argparse

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

    plan = group.add_parser("plan", help="memory per GPU of a run (parameters, gradients, AdamW, EMA) for world sizes")
    plan.add_argument("--model", required=True, help="wan2.2-ti2v-5b, wan2.2-t2v-a14b, or a Diffusers Wan folder")
    plan.add_argument("--world", type=int, nargs="+", default=[8, 16], help="GPUs in the run")
    plan.add_argument("--experts", type=int, default=1, help="experts that train (two-expert models)")
    plan.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tune")
    plan.add_argument("--ema", action="store_true", help="an EMA of the trained weights")
    plan.add_argument("--vfm-dim", type=int, default=1024, help="V-JEPA 2 width (ViT-L 1024, ViT-g 1408)")
    plan.add_argument("--replicate", type=int, default=1, help="parallel.dp_replicate (HSDP)")
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
        done = (run / "pipeline").is_dir()
        print(
            f"run {run}; "
            + (f"Diffusers-format pipeline in {run / 'pipeline'}" if done else "stopped early, no export")
        )


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


def _plan(args: argparse.Namespace) -> None:
    from sara.parallel.plan import PlanSpec, format_plan

    spec = PlanSpec(args.model, args.experts, args.lora_rank, args.ema, args.vfm_dim)
    print(format_plan(spec, args.world, args.replicate))
