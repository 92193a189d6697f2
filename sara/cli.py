"""The ``sara`` command (also ``python -m sara``)."""

from __future__ import annotations

import argparse
import json
import sys

from sara.routing import MODES

TINY_NAMES = (
    "sam3",
    "vjepa2",
    "umt5",
    "qwen3vl",
    "wan",
    "wan-a14b",
    "wan-ti2v",
    "wan-small",
)  # kept here so that `--help` does not import transformers


def _demo(args: argparse.Namespace) -> None:
    from sara.config import DemoConfig, load_config
    from sara.demo import run_demo

    run_demo(load_config(DemoConfig, args.config, args.overrides))


def _budget(args: argparse.Namespace) -> None:
    from pathlib import Path

    from sara.budget import format_budget, load_saliency
    from sara.routing import pair_budget

    if Path(args.file).suffix in (".json", ".jsonl"):
        from sara.data.manifest import load_manifest
        from sara.data.saliency import mask_saliency

        saliency, problems = mask_saliency(
            load_manifest(args.file), args.frames, args.size, args.tubelet, args.patch, progress=not args.json
        )
        for line in problems:
            print(f"skipped {line}", file=sys.stderr)
        title = f"{args.file}: ground-truth masks of {len(saliency)} clips on the {args.frames}×{args.size}² token grid"
    else:
        saliency, title = load_saliency(args.file), str(args.file)
    budget = pair_budget(saliency, args.threshold)
    print(json.dumps(budget, indent=2) if args.json else format_budget(budget, title=title))


def _data_synth(args: argparse.Namespace) -> None:
    from sara.data.synthetic import SynthSpec, synthesize

    spec = SynthSpec(
        num=args.num,
        seed=args.seed,
        frames=args.frames,
        size=args.size,
        fg_fraction=args.fg_fraction,
        heldout_fraction=args.heldout_fraction,
    )
    summary = synthesize(spec, args.out, workers=args.workers)
    clips = ", ".join(f"{n} {split}" for split, n in summary["clips"].items())
    print(f"wrote {clips} clips to {summary['out']}; mean FG fraction of the token grid {summary['fg_fraction']:.3f}")


def _data_prompts(args: argparse.Namespace) -> None:
    from sara.data.manifest import load_manifest
    from sara.data.prompts import Endpoint, fill_prompts

    if (args.endpoint is None) != (args.model is None):
        raise ValueError("--endpoint and --model go together")
    endpoint = Endpoint(args.endpoint, args.model, args.timeout, args.retries) if args.endpoint else None
    stats = fill_prompts(load_manifest(args.manifest), endpoint, args.concurrency)
    print(
        f"{args.manifest}: {stats.asked} captions asked ({stats.fallbacks} fell back to the cast list), "
        f"{stats.from_cast} from the cast list, {stats.kept} kept, {stats.without} left without entities"
    )


def _data_check(args: argparse.Namespace) -> int:
    from sara.data.check import check_manifest
    from sara.data.manifest import load_manifest

    report = check_manifest(load_manifest(args.manifest))
    for line in report.problems:
        print(line)
    print(report.summary())
    return 1 if report.problems else 0


def _data_masks(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from sara.data.extract_masks import extract_masks
    from sara.data.manifest import load_manifest
    from sara.models.sam3 import Sam3Segmenter

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    manifest = load_manifest(args.manifest)
    segmenter = Sam3Segmenter(args.weights, device=device, dtype=dtype)
    masks_dir = Path(args.masks_dir) if args.masks_dir else manifest.path.parent / "masks"
    stats = extract_masks(manifest, segmenter, masks_dir, save_every=args.save_every)
    print(
        f"{manifest.path}: segmented {stats.done} clips ({stats.frames} frames), {stats.already} already done, "
        f"{stats.no_entities} without entity prompts, {len(stats.failed)} unreadable; masks in {masks_dir}"
    )
    for line in stats.failed:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if stats.failed else 0


def _models_tiny(args: argparse.Namespace) -> None:
    from sara.models.presets import TINY

    print(f"wrote tiny {args.name} to {TINY[args.name](args.out, seed=args.seed)}")


def _resume(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``--resume``'s value and the overrides: ``--resume key=value …`` means ``--resume latest key=value …``."""
    if args.resume is not None and "=" in args.resume:
        return "latest", [args.resume, *args.overrides]
    return args.resume, args.overrides


def _stage1_train(args: argparse.Namespace) -> None:
    from sara.config import Stage1Config, load_config
    from sara.stage1.train import train

    resume, overrides = _resume(args)
    train(load_config(Stage1Config, args.config, overrides), resume=resume)


def _stage1_eval(args: argparse.Namespace) -> None:
    from sara.stage1.run import evaluate_run

    evaluate_run(args.checkpoint)


def _stage1_infer(args: argparse.Namespace) -> None:
    from sara.stage1.infer import infer

    written = infer(
        args.checkpoint, args.manifest, args.records, args.prompt, args.out, args.columns, args.fps, args.device
    )
    print(f"wrote {len(written)} figures (PNG, GIF, MP4) to {written[0].parent.parent}")


def _stage2_precompute(args: argparse.Namespace) -> None:
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.stage2.cache import FeatureCache, precompute

    folder = precompute(load_config(Stage2Config, args.config, args.overrides))
    print(f"cache {folder}: {len(FeatureCache(folder))} clips")


def _stage2_train(args: argparse.Namespace) -> None:
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.stage2.train import train

    resume, overrides = _resume(args)
    run = train(load_config(Stage2Config, args.config, overrides), resume=resume)
    print(f"run {run}; Diffusers-format pipeline in {run / 'pipeline'}")


def _stage2_generate(args: argparse.Namespace) -> None:
    from sara.data.manifest import load_manifest
    from sara.stage2.generate import Sampling, generate

    prompts = list(args.prompt or [])
    if args.manifest:
        prompts += [r.prompt() for r in load_manifest(args.manifest).records]
    if not prompts:
        raise ValueError("give --prompt TEXT or --manifest FILE")
    sampling = Sampling(
        args.negative_prompt,
        args.cfg,
        args.steps,
        args.seed,
        args.frames,
        args.height,
        args.width,
        args.fps,
        args.text_length,
    )
    written = generate(args.pipeline, prompts, args.out, sampling, args.scheduler, args.shift, args.device)
    print(f"wrote {len(written)} videos (mp4 and GIF) to {args.out}")


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device: CUDA is not available on this machine")


def _bench_trd(args: argparse.Namespace) -> None:
    import torch

    from sara.bench.trd import bench_trd, format_rows

    _check_device(args.device)
    rows = bench_trd(
        args.tokens,
        args.dim,
        args.batch,
        args.modes,
        args.fg_fraction,
        args.device,
        args.dtype,
        args.chunk_size,
        args.repeats,
        args.min_seconds,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    threads = torch.get_num_threads()
    print(
        f"TRD forward+backward, B={args.batch} D={args.dim} {args.dtype} on {args.device} "
        f"({threads} CPU threads); hard masks with FG {args.fg_fraction} for routed modes"
    )
    print(format_rows(rows))


def _bench_step(args: argparse.Namespace) -> None:
    import torch

    from sara.bench.step import bench_step, format_step

    _check_device(args.device)
    results = bench_step(
        args.modes,
        args.batch,
        args.frames,
        args.size,
        args.device,
        args.warmup,
        args.steps,
        online=not args.no_online,
        wan=args.wan,
        workdir=args.workdir,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"Stage 2 step (forward, backward, AdamW) of the {args.wan} Wan DiT, batch {args.batch} of {args.frames} frames "
        f"at {args.size}² on {args.device} ({torch.get_num_threads()} CPU threads); median of {args.steps} steps"
    )
    print(format_step(results))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sara", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the pipeline end to end on generated data; writes report.html")
    demo.add_argument("--config", help="YAML file (default: built-in defaults, same as configs/demo.yaml)")
    demo.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trd.mode=and seed=1")
    demo.set_defaults(handler=_demo)

    budget = commands.add_parser("budget", help="pair budget of a saliency file (.pt/.npz/.npy, [B,N] or [N])")
    budget.add_argument("file")
    budget.add_argument("--threshold", type=float, default=0.5, help="FG when saliency > threshold")
    budget.add_argument("--json", action="store_true", help="print the statistics as JSON")
    grid = budget.add_argument_group("for a manifest: the token grid its masks are pooled onto")
    grid.add_argument("--frames", type=int, default=16, help="frames the encoder sees")
    grid.add_argument("--size", type=int, default=256, help="square input size in pixels")
    grid.add_argument("--tubelet", type=int, default=2, help="frames per token")
    grid.add_argument("--patch", type=int, default=16, help="pixels per token side")
    budget.set_defaults(handler=_budget)

    data = commands.add_parser("data", help="data sets: synthesise, entity prompts, masks, check")
    data_commands = data.add_subparsers(dest="data", required=True)
    synth = data_commands.add_parser("synth", help="write the synthetic shapes world (clips, masks, manifests)")
    synth.add_argument("--out", required=True, help="folder to write")
    synth.add_argument("--num", type=int, default=200, help="number of clips")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--frames", type=int, default=33, help="frames per clip")
    synth.add_argument("--size", type=int, default=128, help="square frame size in pixels")
    synth.add_argument("--fg-fraction", type=float, default=0.5, help="mean FG share of the token grid")
    synth.add_argument("--heldout-fraction", type=float, default=0.1, help="share of clips in heldout.jsonl")
    synth.add_argument("--workers", type=int, default=2, help="processes")
    synth.set_defaults(handler=_data_synth)
    prompts = data_commands.add_parser("prompts", help="short entity prompts for records that have none")
    prompts.add_argument("manifest")
    prompts.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:30000/v1")
    prompts.add_argument("--model", help="model name the endpoint serves")
    prompts.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    prompts.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    prompts.add_argument("--retries", type=int, default=2, help="extra tries per caption before falling back")
    prompts.set_defaults(handler=_data_prompts)
    check = data_commands.add_parser("check", help="read every clip and mask once; one line per problem")
    check.add_argument("manifest")
    check.set_defaults(handler=_data_check)
    masks = data_commands.add_parser("masks", help="per-entity masks from SAM 3 (text-prompted video segmentation)")
    masks.add_argument("manifest")
    masks.add_argument("--weights", required=True, help="local SAM 3 folder (Hugging Face format)")
    masks.add_argument("--masks-dir", help="where mask files go (default: masks/ beside the manifest)")
    masks.add_argument("--device", help="default: cuda when available, else cpu")
    masks.add_argument("--save-every", type=int, default=20, help="rewrite the manifest every this many clips")
    masks.set_defaults(handler=_data_masks)

    stage1 = commands.add_parser("stage1", help="the Semantic Aligner: train, evaluate, draw")
    stage1_commands = stage1.add_subparsers(dest="stage1", required=True)
    s1_train = stage1_commands.add_parser("train", help="train the aligner on frozen V-JEPA 2 features")
    s1_train.add_argument("--config", help="YAML file, e.g. configs/stage1/tiny.yaml (default: built-in defaults)")
    s1_train.add_argument(
        "--resume", nargs="?", const="latest", help="continue from a checkpoint: latest (the default) or its folder"
    )
    s1_train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.steps=100")
    s1_train.set_defaults(handler=_stage1_train)
    s1_eval = stage1_commands.add_parser("eval", help="held-out figures of a run; writes RUN_DIR/eval.json")
    s1_eval.add_argument(
        "--checkpoint", required=True, help="run folder (its latest checkpoint) or a checkpoint folder"
    )
    s1_eval.set_defaults(handler=_stage1_eval)
    s1_infer = stage1_commands.add_parser(
        "infer", help="figures per prompt: frames (+ masks), PCA of the enhanced features, saliency"
    )
    s1_infer.add_argument("manifest", help="clips to draw; masks are overlaid where the manifest has them")
    s1_infer.add_argument(
        "--checkpoint", required=True, help="run folder (its latest checkpoint) or a checkpoint folder"
    )
    s1_infer.add_argument("--records", type=int, nargs="+", default=[0], help="record indices (default: 0)")
    s1_infer.add_argument(
        "--prompt",
        nargs="+",
        help="prompts to draw instead of the record's entities (the full caption is always drawn)",
    )
    s1_infer.add_argument("--out", help="folder for the figures (default: RUN_DIR/infer)")
    s1_infer.add_argument("--columns", type=int, default=8, help="sampled frames in the PNG")
    s1_infer.add_argument("--fps", type=float, default=8.0, help="frame rate of the GIF and MP4")
    s1_infer.add_argument("--device", help="default: the run's device setting")
    s1_infer.set_defaults(handler=_stage1_infer)

    stage2 = commands.add_parser("stage2", help="the DiT with flow matching + routed TRD: precompute, train, generate")
    stage2_commands = stage2.add_subparsers(dest="stage2", required=True)
    s2_pre = stage2_commands.add_parser(
        "precompute", help="VAE latents, caption states, V-JEPA 2 tokens and saliency per clip, sharded"
    )
    s2_pre.add_argument("--config", help="YAML file, e.g. configs/stage2/tiny.yaml (default: built-in defaults)")
    s2_pre.add_argument("overrides", nargs="*", help="key=value overrides, e.g. models.aligner=outputs/stage1/tiny")
    s2_pre.set_defaults(handler=_stage2_precompute)
    s2_train = stage2_commands.add_parser("train", help="continual training of the DiT; exports a Diffusers pipeline")
    s2_train.add_argument("--config", help="YAML file, e.g. configs/stage2/tiny.yaml (default: built-in defaults)")
    s2_train.add_argument(
        "--resume", nargs="?", const="latest", help="continue from a checkpoint: latest (the default) or its folder"
    )
    s2_train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. objective.align.mode=trd")
    s2_train.set_defaults(handler=_stage2_train)
    s2_gen = stage2_commands.add_parser("generate", help="text-to-video with WanPipeline; mp4 and GIF per prompt")
    s2_gen.add_argument("--pipeline", required=True, help="Diffusers-format Wan folder, e.g. RUN_DIR/pipeline")
    s2_gen.add_argument("--prompt", nargs="+", help="prompts")
    s2_gen.add_argument("--manifest", help="also every caption of this manifest")
    s2_gen.add_argument("--out", required=True, help="folder for the videos")
    s2_gen.add_argument("--negative-prompt", default="", help="what classifier-free guidance steers away from")
    s2_gen.add_argument("--cfg", type=float, default=5.0, help="guidance scale (1: no guidance)")
    s2_gen.add_argument("--steps", type=int, default=30, help="denoising steps")
    s2_gen.add_argument("--scheduler", choices=["unipc", "euler"], default="unipc", help="UniPC or flow-match Euler")
    s2_gen.add_argument("--shift", type=float, default=3.0, help="flow shift of the sampler")
    s2_gen.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i")
    s2_gen.add_argument("--frames", type=int, default=17, help="4k + 1 frames")
    s2_gen.add_argument("--height", type=int, default=128)
    s2_gen.add_argument("--width", type=int, default=128)
    s2_gen.add_argument("--fps", type=float, default=16.0, help="frame rate of the files")
    s2_gen.add_argument(
        "--text-length", type=int, default=512, help="caption tokens, as in training (models.text_length)"
    )
    s2_gen.add_argument("--device", default="auto")
    s2_gen.set_defaults(handler=_stage2_generate)

    models = commands.add_parser("models", help="model presets")
    model_commands = models.add_subparsers(dest="models", required=True)
    tiny = model_commands.add_parser("tiny", help="write a tiny preset (seeded random weights) as a local folder")
    tiny.add_argument("name", choices=sorted(TINY_NAMES))
    tiny.add_argument("--out", required=True, help="folder to write")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_models_tiny)

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    benches = bench.add_subparsers(dest="bench", required=True)
    trd = benches.add_parser("trd", help="dense vs blockwise TRD: time, peak memory, GFLOP/s")
    trd.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384], help="N values")
    trd.add_argument("--dim", type=int, default=1024, help="feature width D")
    trd.add_argument("--batch", type=int, default=1)
    trd.add_argument("--modes", nargs="+", choices=MODES, default=["none", "or"])
    trd.add_argument("--fg-fraction", type=float, default=0.48, help="FG share of the hard masks")
    trd.add_argument("--device", default="cpu")
    trd.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    trd.add_argument("--chunk-size", type=int, default=None, help="row block (default: automatic)")
    trd.add_argument("--repeats", type=int, default=3, help="least number of timed runs after the warm-up")
    trd.add_argument("--min-seconds", type=float, default=2.0, help="time each case for at least this long; median")
    trd.add_argument("--json", action="store_true", help="print the rows as JSON")
    trd.set_defaults(handler=_bench_trd)
    step = benches.add_parser("step", help="Stage 2 step time and peak memory per mode, as ratios to sft")
    step.add_argument("--modes", nargs="+", choices=["sft", "repa", "trd", "sara"], default=["sft", "trd", "sara"])
    step.add_argument("--batch", type=int, default=2, help="clips per step")
    step.add_argument("--frames", type=int, default=17, help="4k + 1 frames per clip")
    step.add_argument("--size", type=int, default=128, help="square frame size")
    step.add_argument("--device", default="cpu")
    step.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    step.add_argument("--steps", type=int, default=20, help="timed steps; the median is reported")
    step.add_argument("--no-online", action="store_true", help="skip the online-encoder variant")
    step.add_argument(
        "--wan", default="tiny", help="tiny | tiny-a14b | tiny-ti2v | small, or a Diffusers-format Wan folder"
    )
    step.add_argument("--workdir", help="where the world, presets and cache go (default: a new temporary folder)")
    step.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    step.set_defaults(handler=_bench_step)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except ValueError as exc:  # bad input (ConfigError, ManifestError included): one line, no traceback
        print(f"sara: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
