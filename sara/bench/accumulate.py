"""``sara bench accumulate``: what a step of gradient accumulation and the EMA cost on FSDP
ranks (gloo processes on CPU; NCCL on GPUs).

1. **Accumulation**: one optimizer step of the ``small`` DiT with SARA on each rank's clips,
   in 1 or ``accumulate`` micro-batches, under ``parallel.accumulate_sync`` ``final`` (only
   the last micro-batch reduces) and ``every`` (each reduce-scatters): the step's seconds
   (median of the timed steps, the first untimed) and FSDP's reduce-scatters per step.
2. **EMA**: one EMA update of the sharded trained weights — diffusers' ``EMAModel`` (a DTensor
   op per parameter) against :class:`~sara.trainer.ema.LocalEMA` (one foreach update of the
   local shards) — median seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import torch
import torch.distributed as dist
from diffusers.training_utils import EMAModel

from sara.bench.dist import VFM_DIM, VIEW
from sara.config.parallel import ParallelConfig
from sara.config.stage2 import Stage2Config
from sara.models.presets import resolve
from sara.models.wan import load_transformers, read_layout
from sara.parallel.spawn import run_processes
from sara.parallel.world import init_world
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import parallelize
from sara.stage2.step import noise_generator, train_step
from sara.trainer.ema import LocalEMA

CLIPS = 4  # per rank and step


class Calls:
    count = 0


@contextmanager
def count_calls(owner: object, name: str) -> Iterator[Calls]:
    """Count the calls of ``owner.name`` (e.g. ``torch.distributed.reduce_scatter_single``,
    which FSDP2 looks up at each call) inside the block."""
    calls, original = Calls(), getattr(owner, name)

    def counted(*args, **kwargs):
        calls.count += 1
        return original(*args, **kwargs)

    with mock.patch.object(owner, name, counted):
        yield calls


def _model(folder: str, config: Stage2Config, world) -> Stage2Model:
    torch.manual_seed(0)
    layout = read_layout(folder)
    model = Stage2Model(load_transformers(layout), layout, config.objective, VFM_DIM, VIEW)
    return parallelize(model, world, config.parallel)


def _batch(model: Stage2Model) -> dict:
    g = torch.Generator().manual_seed(0)  # 17 frames of 128²: latents 5 × 16 × 16, V-JEPA grid 8 × 8 × 8
    return {
        "latents": torch.randn(CLIPS, 16, 5, 16, 16, generator=g),
        "text": torch.randn(CLIPS, 64, model.experts["high"].config.text_dim, generator=g),
        "vfm": torch.randn(CLIPS, 512, VFM_DIM, generator=g),
        "saliency": (torch.rand(CLIPS, 512, generator=g) < 0.48).float(),
    }


def _accumulation(folder: str, cases: list[tuple[int, str]], steps: int) -> list[dict]:
    """This rank's step seconds and reduce-scatters per step for each (accumulate, sync)."""
    rows = []
    for accumulate, sync in cases:
        config = Stage2Config(parallel=ParallelConfig(accumulate_sync=sync))
        config.optim.accumulate = accumulate
        world = init_world(config.parallel, "cpu")
        model = _model(folder, config, world)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        batch, times = _batch(model), []
        for step in range(steps + 1):
            with count_calls(dist, "reduce_scatter_single") as calls:
                start = time.perf_counter()
                train_step(model, optimizer, batch, noise_generator(0, step), config, world)
                times.append(time.perf_counter() - start)
        rows.append({"accumulate": accumulate, "sync": sync, "step_s": statistics.median(times[1:]), "rs": calls.count})
    return rows


def _ema(folder: str, steps: int) -> dict:
    """Median seconds of one EMA update of the sharded trained weights, each implementation."""
    config = Stage2Config()
    world = init_world(config.parallel, "cpu")
    trained = [p for p in _model(folder, config, world).parameters() if p.requires_grad]
    out = {}
    for name, kind in (("EMAModel", EMAModel), ("LocalEMA", LocalEMA)):
        ema, times = kind(trained, decay=0.999), []
        for _ in range(steps + 1):
            start = time.perf_counter()
            ema.step(trained)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times[1:])
    return out | {"parameters": len(trained)}


def bench_accumulate(root: str, ranks: int = 2, accumulate: int = 4, steps: int = 3, preset: str = "wan-small") -> dict:
    """Rank 0's figures (the ranks run the same work) of both tables, for a tiny Wan ``preset``."""
    folder = str(resolve("tiny", preset, root))
    cases = [(1, "final"), (accumulate, "final"), (accumulate, "every")]
    (accumulation, *_) = run_processes(_accumulation, ranks, folder, cases, steps)
    (ema, *_) = run_processes(_ema, ranks, folder, 10 * steps)
    return {"ranks": ranks, "clips": CLIPS, "accumulation": accumulation, "ema": ema}


def format_accumulate(figures: dict) -> str:
    reference = figures["accumulation"][0]["step_s"]
    lines = [
        f"accumulation: {figures['clips']} clips a rank and step, {figures['ranks']} FSDP ranks",
        f"{'accumulate':>10} | {'sync':>6} | {'step s':>7} | {'× accumulate 1':>14} | {'reduce-scatters':>15}",
        "-" * 66,
    ]
    for row in figures["accumulation"]:
        lines.append(
            f"{row['accumulate']:>10} | {row['sync']:>6} | {row['step_s']:>7.3f} | "
            f"{row['step_s'] / reference:>14.2f} | {row['rs']:>15}"
        )
    ema = figures["ema"]
    lines += [
        "",
        f"EMA update of {ema['parameters']} sharded parameters: EMAModel {1e3 * ema['EMAModel']:.2f} ms, "
        f"LocalEMA {1e3 * ema['LocalEMA']:.2f} ms ({ema['EMAModel'] / ema['LocalEMA']:.1f}× faster)",
    ]
    return "\n".join(lines)
