"""`sara bench …`: benchmarks that print figures (never asserted in tests)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from sara.bench.trd import DTYPES
from sara.losses.alignment import ALIGN_MODES
from sara.models.presets import WAN_VARIANTS
from sara.routing import MODES


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    group = bench.add_subparsers(dest="bench", required=True)
    trd = group.add_parser("trd", help="dense vs blockwise TRD: time, peak memory, GFLOP/s")
    trd.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384], help="N values")
    trd.add_argument("--dim", type=int, default=1024, help="feature width D")
    trd.add_argument("--batch", type=int, default=1)
    trd.add_argument("--modes", nargs="+", choices=MODES, default=["none", "or"])
    trd.add_argument("--fg-fraction", type=float, default=0.48, help="FG share of the hard masks")
    trd.add_argument("--device", default="cpu")
    trd.add_argument("--dtype", choices=DTYPES, default=DTYPES[0])
    trd.add_argument("--chunk-size", type=int, default=None, help="row block (default: automatic)")
    trd.add_argument("--repeats", type=int, default=3, help="least number of timed runs after the warm-up")
    trd.add_argument("--min-seconds", type=float, default=2.0, help="time each case for at least this long; median")
    trd.add_argument("--json", action="store_true", help="print the rows as JSON")
    trd.set_defaults(handler=_trd)

    step = group.add_parser("step", help="Stage 2 step time and peak memory per mode, as ratios to sft")
    step.add_argument("--modes", nargs="+", choices=ALIGN_MODES, default=["sft", "trd", "sara"])
    step.add_argument("--batch", type=int, default=2, help="clips per step")
    step.add_argument("--frames", type=int, default=17, help="4k + 1 frames per clip")
    step.add_argument("--size", type=int, default=128, help="square frame size")
    step.add_argument("--device", default="cpu")
    step.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    step.add_argument("--steps", type=int, default=20, help="timed steps; the median is reported")
    step.add_argument("--no-online", action="store_true", help="skip the online-encoder variant")
    step.add_argument("--wan", default="tiny", help=f"{' | '.join(WAN_VARIANTS)}, or a Diffusers-format Wan folder")
    step.add_argument("--workdir", help="where the world, presets and cache go (default: a new temporary folder)")
    step.add_argument(
        "--memory", action="store_true", help="also each memory switch, × the case it changes (sara, its validation)"
    )
    step.add_argument(
        "--workers", type=int, default=0, help="loader processes reading batches ahead (data.num_workers)"
    )
    step.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    step.set_defaults(handler=_step)

    dist = group.add_parser("dist", help="sharding on gloo processes: state per rank, bytes sent, TRD shares")
    dist.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384], help="N of the TRD shares")
    dist.add_argument("--dim", type=int, default=1024, help="feature width D of the TRD shares")
    dist.add_argument("--parts", type=int, nargs="+", default=[2, 4], help="P: ranks sharing one TRD loss")
    dist.add_argument("--workdir", help="where the presets go (default: a new temporary folder)")
    dist.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    dist.set_defaults(handler=_dist)

    data = group.add_parser(
        "data", help="Stage 2 input pipeline: start-up to the first batch, batches/s per worker count"
    )
    data.add_argument("--clips", type=int, nargs="+", default=[1000, 10000, 100000], help="cache sizes N")
    data.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader processes of the steady state")
    data.add_argument("--steps", type=int, default=200, help="steady-state batches timed")
    data.add_argument("--workdir", help="where the synthetic caches go, kept for reuse (default: a temporary folder)")
    data.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    data.set_defaults(handler=_data)

    accumulate = group.add_parser("accumulate", help="gradient accumulation and the EMA on FSDP gloo ranks")
    accumulate.add_argument("--ranks", type=int, default=2, help="gloo processes")
    accumulate.add_argument("--accumulate", type=int, default=4, help="micro-batches a step against 1")
    accumulate.add_argument("--steps", type=int, default=3, help="timed steps (the EMA: 10×); the median is reported")
    accumulate.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    accumulate.set_defaults(handler=_accumulate)

    encoders = group.add_parser("encoders", help="precompute's frozen models: one copy each, tiny and real sizes")
    encoders.add_argument("--workdir", help="where the world, presets and aligner go (default: a temporary folder)")
    encoders.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    encoders.set_defaults(handler=_encoders)

    gpu = group.add_parser("gpu", help="the GPU's checks: bf16 TRD at N=32768, a bf16 FSDP step of TI2V-5B's width")
    gpu.add_argument("--dry-run", action="store_true", help="every check on the CPU at toy sizes")
    gpu.add_argument("--out", help="also write the figures to this JSON file")
    gpu.set_defaults(handler=_gpu)

    sample = group.add_parser("sample", help="text-to-video seconds per video, one by one vs several per call")
    sample.add_argument("--wan", default="tiny", help=f"{' | '.join(WAN_VARIANTS)}, or a Diffusers-format Wan folder")
    sample.add_argument("--workdir", default="outputs/models", help="where a tiny preset is written")
    sample.add_argument("--videos", type=int, default=16, help="videos timed per row")
    sample.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16], help="videos per pipeline call, per row")
    sample.add_argument("--steps", type=int, default=20, help="denoising steps")
    sample.add_argument("--frames", type=int, default=9, help="4k + 1 frames per video")
    sample.add_argument("--size", type=int, default=96, help="square frame size")
    sample.add_argument("--text-length", type=int, default=512, help="caption tokens (models.text_length)")
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--json", action="store_true", help="print the rows as JSON")
    sample.set_defaults(handler=_sample)

    vae = group.add_parser("vae", help="shapes VAE training step: Diffusers layers vs fast_layers, per phase")
    vae.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    vae.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported")
    vae.add_argument("--json", action="store_true", help="print the rows as JSON")
    vae.set_defaults(handler=_vae)


def _trd(args: argparse.Namespace) -> None:
    import torch

    from sara.bench.trd import bench_trd, format_rows
    from sara.device import pick_device

    pick_device(args.device)  # a clear error when CUDA is asked for and absent
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
    header = (
        f"TRD forward+backward, B={args.batch} D={args.dim} {args.dtype} on {args.device} "
        f"({torch.get_num_threads()} CPU threads); hard masks with FG {args.fg_fraction} for routed modes"
    )
    _emit(args, rows, header, format_rows)


def _step(args: argparse.Namespace) -> None:
    import torch

    from sara.bench.step import VALIDATE, VALIDATE_STEPS, bench_step, format_tables
    from sara.device import pick_device

    pick_device(args.device)
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
        memory=args.memory,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"Stage 2 step (forward, backward, AdamW) of the {args.wan} Wan DiT, batch {args.batch} of {args.frames} frames "
        f"at {args.size}² on {args.device} ({torch.get_num_threads()} CPU threads), {args.workers} loader workers; "
        f"median of {args.steps} steps"
    )
    modes, switches = format_tables(results)
    print(modes)
    if switches:
        print("\nmemory switches, each against the case above it that it changes:")
        print(switches)
        validate = results[VALIDATE]
        print(
            f"{VALIDATE}: {validate['batch']} validation videos of {validate['wan']} training its low-noise "
            f"expert, {VALIDATE_STEPS} steps each; its time is the sampling's"
        )


def _dist(args: argparse.Namespace) -> None:
    import tempfile

    from sara.bench.dist import bench_sharding, bench_shares, format_dist

    with tempfile.TemporaryDirectory() as scratch:
        sharding = bench_sharding(args.workdir or scratch)
    shares = bench_shares(args.tokens, args.dim, args.parts)
    if args.json:
        print(json.dumps({"sharding": sharding, "shares": shares}, indent=2))
        return
    print(format_dist(sharding, shares))


def _data(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from sara.bench.data import BATCH, bench_data, format_data

    with tempfile.TemporaryDirectory() as scratch:
        figures = bench_data(Path(args.workdir or scratch), args.clips, args.workers, args.steps, not args.json)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"Stage 2 cache: start-up to the first batch of {BATCH} clips, and batches/s of the loader, on CPU")
    print(format_data(figures))


def _accumulate(args: argparse.Namespace) -> None:
    import tempfile

    from sara.bench.accumulate import bench_accumulate, format_accumulate

    with tempfile.TemporaryDirectory() as scratch:
        figures = bench_accumulate(scratch, args.ranks, args.accumulate, args.steps)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(format_accumulate(figures))


def _encoders(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from sara.bench.encoders import bench_encoders, format_encoders

    with tempfile.TemporaryDirectory() as scratch:
        figures = bench_encoders(Path(args.workdir or scratch))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(format_encoders(figures))


def _gpu(args: argparse.Namespace) -> None:
    from pathlib import Path

    from sara.bench.gpu import DRY, FULL, format_checks, run_checks
    from sara.device import pick_device

    check = DRY if args.dry_run else FULL
    device = pick_device(check.device)  # a clear error where CUDA is asked for and absent
    figures = run_checks(check)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    name = torch_name(device)
    print(f"sara bench gpu{' --dry-run' if args.dry_run else ''} on {name}")
    print(format_checks(figures))


def torch_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def _sample(args: argparse.Namespace) -> None:
    import torch

    from sara.bench.sample import bench_sample, format_sample
    from sara.config.sampling import Sampling
    from sara.device import pick_device
    from sara.models.presets import wan_folder

    device = pick_device(args.device)
    folder = wan_folder(args.wan, args.workdir)
    sampling = Sampling(
        steps=args.steps, frames=args.frames, height=args.size, width=args.size, text_length=args.text_length
    )
    rows = bench_sample(folder, sampling, args.videos, args.batch, device)
    header = (
        f"text-to-video with the {args.wan} Wan pipeline: {args.videos} videos of {args.frames} frames at "
        f"{args.size}², {args.steps} steps with CFG, decoded; on {args.device} ({torch.get_num_threads()} CPU threads)"
    )
    _emit(args, rows, header, format_sample)


def _vae(args: argparse.Namespace) -> None:
    import torch

    from sara.bench.vae import bench_vae, format_vae
    from sara.shapes.vae import VaeRecipe

    recipe = VaeRecipe()
    rows = bench_vae(recipe, args.warmup, args.steps)
    header = (
        f"shapes VAE training step (base width {recipe.base_dim}, {recipe.crop}² crops) on CPU "
        f"({torch.get_num_threads()} threads); median of {args.steps} steps"
    )
    _emit(args, rows, header, format_vae)


def _emit(args: argparse.Namespace, rows: list[dict], header: str, format_table: Callable[[list[dict]], str]) -> None:
    """The rows as JSON under ``--json``, else the header line and the table."""
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(header)
    print(format_table(rows))
