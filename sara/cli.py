"""The ``sara`` command (also ``python -m sara``).

Each command group registers its subcommands in a module of its own (``sara/commands/``);
handlers import what they run, so ``--help`` stays quick. Every expected failure — bad
input, a config or manifest error, missing weights, too many unreadable samples — ends in
one line on stderr and exit code 2; a trainer stopped by a signal after its checkpoint
exits with 75 (``sara.trainer.preemption.EXIT_STOPPED``) on rank 0, 0 on the others.
"""

from __future__ import annotations

import argparse
import json
import sys

from sara.commands import bench as bench_cli
from sara.commands import data as data_cli
from sara.commands import eval as eval_cli
from sara.commands import moalign as moalign_cli
from sara.commands import models as models_cli
from sara.commands import stage1 as stage1_cli
from sara.commands import stage2 as stage2_cli
from sara.config.arguments import add_config_arguments
from sara.config.schema import GridConfig
from sara.log import setup_logging


def _demo(args: argparse.Namespace) -> None:
    from sara.config import DemoConfig, load_config
    from sara.demo.run import run_demo

    run_demo(load_config(DemoConfig, args.config, args.overrides))


def _repro_base(args: argparse.Namespace) -> int:
    from sara.config import load_config
    from sara.config.repro import ReproConfig
    from sara.study.base import base_folder, format_gate, run_base

    config = load_config(ReproConfig, args.config, args.overrides)
    report = run_base(config)
    print(format_gate(report))
    print(f"base: {base_folder(config)}")
    return 0 if report["gate"]["passed"] else 1  # a failed gate: the study would start from a base that cannot draw


def _repro(args: argparse.Namespace) -> None:
    import time

    from sara.config import load_config
    from sara.config.repro import ReproConfig
    from sara.study.report import write_study
    from sara.study.run import run_repro

    config = load_config(ReproConfig, args.config, args.overrides)
    start = time.perf_counter()
    gate, results = run_repro(config)
    table = write_study(config, gate, results, time.perf_counter() - start)
    print(table.read_text())
    print(f"table: {table}; report: {table.with_name('report.html')}")


def _budget(args: argparse.Namespace) -> None:
    from pathlib import Path

    from sara.budget import format_budget, load_saliency
    from sara.routing import pair_budget

    if Path(args.file).suffix in (".json", ".jsonl"):
        from sara.data.manifest import load_manifest
        from sara.data.saliency import mask_saliency

        timing = GridConfig(fps=args.fps, window=args.window)
        shape = (args.size, args.width or args.size)
        saliency, problems = mask_saliency(
            load_manifest(args.file), args.frames, shape, args.tubelet, args.patch, timing, progress=not args.json
        )
        for line in problems:
            print(f"skipped {line}", file=sys.stderr)
        grid = f"{args.frames}×{shape[0]}×{shape[1]}"
        title = f"{args.file}: ground-truth masks of {len(saliency)} clips on the {grid} token grid"
    else:
        saliency, title = load_saliency(args.file), str(args.file)
    budget = pair_budget(saliency, args.threshold)
    print(json.dumps(budget, indent=2) if args.json else format_budget(budget, title=title))


def _add_budget(commands: argparse._SubParsersAction) -> None:
    budget = commands.add_parser("budget", help="pair budget of a saliency file (.pt/.npz/.npy, [B,N] or [N])")
    budget.add_argument("file")
    budget.add_argument("--threshold", type=float, default=0.5, help="FG when saliency > threshold")
    budget.add_argument("--json", action="store_true", help="print the statistics as JSON")
    grid = budget.add_argument_group("for a manifest: how the encoder sees each clip, hence the grid")
    defaults = GridConfig()
    grid.add_argument("--frames", type=int, default=defaults.frames, help="frames the encoder sees")
    grid.add_argument("--size", type=int, default=defaults.size, help="input height (and width) in pixels")
    grid.add_argument("--width", type=int, help="input width in pixels (default: --size)")
    grid.add_argument("--fps", type=float, default=defaults.fps, help="frame rate of the window")
    grid.add_argument("--window", default=defaults.window, help="centre, start, random or uniform")
    grid.add_argument("--tubelet", type=int, default=defaults.tubelet, help="frames per token")
    grid.add_argument("--patch", type=int, default=defaults.patch, help="pixels per token side")
    budget.set_defaults(handler=_budget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sara", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the pipeline end to end on generated data; writes report.html")
    add_config_arguments(demo, "configs/demo.yaml")
    demo.set_defaults(handler=_demo)
    repro = commands.add_parser(
        "repro",
        help="the toy reproduction: continual SFT vs TRD vs MoAlign vs SARA from a pretrained base, scored by the shapes metric",
    )
    parts = repro.add_subparsers(dest="part", required=True)
    base = parts.add_parser("base", help="pretrain the DiT every continual run starts from, and gate it")
    add_config_arguments(base, "configs/repro.yaml")
    base.set_defaults(handler=_repro_base)
    study = parts.add_parser(
        "study",
        help="every arm, seed and teacher trained on from the base, sampled and scored at each point: tables, figure, report",
    )
    add_config_arguments(study, "configs/repro.yaml")
    study.set_defaults(handler=_repro)
    _add_budget(commands)
    for group in (data_cli, stage1_cli, stage2_cli, moalign_cli, models_cli, eval_cli, bench_cli):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from sara.data.datasets import TooManyBadSamples
    from sara.parallel.world import is_main_process
    from sara.trainer.preemption import EXIT_STOPPED, Stopped

    try:
        return args.handler(args) or 0
    except Stopped as exc:  # a checkpoint is written; the job scheduler decides when to resume
        if not is_main_process():  # the run's outcome is rank 0's: srun --kill-on-bad-exit must not cut it short
            return 0
        print(f"sara: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except (ValueError, TooManyBadSamples, FileNotFoundError, PermissionError) as exc:
        # bad input (ConfigError, ManifestError, WeightsError, VideoError are ValueErrors): one line, no
        # traceback; a run that cannot start (PlanProblems): one line per problem
        for line in getattr(exc, "problems", None) or [str(exc).splitlines()[0] if str(exc) else type(exc).__name__]:
            print(f"sara: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
