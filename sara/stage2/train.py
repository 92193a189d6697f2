"""`sara stage2 train`: continual training of the Wan DiT with flow matching + ``λ ·`` alignment.

In order: the run's set-up resolved once, the world (one process, or ``torchrun``'s), the
model built (on many processes: on the meta device, parallelized — Ulysses, FSDP2 — and
filled from rank 0's copy), the optimizer, a resume, the loop (:mod:`sara.trainer.loop`),
and the export of the trained
expert(s) as a Diffusers-format pipeline (``RUN_DIR/pipeline``) that `WanPipeline` and
`sara stage2 generate` load. Step ``k`` trains on the global batch chosen by
``(seed, k)`` with noise drawn from ``(seed, k)`` (:mod:`sara.stage2.step`), so a
resumed run replays exactly what an uninterrupted one computes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel

from sara.config import save_config
from sara.config.stage2 import Stage2Config
from sara.models.aligner import parameter_count
from sara.parallel.load import load_from_rank0
from sara.parallel.precision import param_dtype
from sara.parallel.world import World, close_world, init_world, launched
from sara.run_dir import RunDir
from sara.stage2.build import Stage2Setup, build_model, resolve_setup
from sara.stage2.clips import CachedClips, OnlineClips
from sara.stage2.export import export_pipeline
from sara.stage2.heldout import HeldoutLoss
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import parallelize, reduce_terms
from sara.stage2.plan import check_plan, plan_run
from sara.stage2.step import global_batch, local_rows, noise_generator, train_step
from sara.stage2.validate import Validator
from sara.trainer.batches import BucketSteps, lr_factor
from sara.trainer.checkpoint import TrainState, load_checkpoint, resume_point
from sara.trainer.loop import LoopPlan, run_loop
from sara.trainer.preemption import RunLock


def train(config: Stage2Config, resume: str | None = None, progress: bool = True) -> Path:
    """Train; returns the run folder (checkpoints, history, TensorBoard, ``pipeline/``).

    Raises:
        Stopped: SIGTERM/SIGUSR1 stopped the run after its checkpoint, before the export.
    """
    # before the process group exists: a tiny preset written later would get its weights from
    # rank 0 alone (transformers saves on rank 0 only), each rank writes its own copy here
    setup = resolve_setup(config)
    # every problem of the run — splits, shapes, heads, held-out batch — before any weight is read
    check_plan(plan_run(config, int(os.environ["WORLD_SIZE"]) if launched() else 1, setup))
    world = init_world(config.parallel, config.device)
    try:
        return _train(config, setup, world, resume, progress)
    finally:
        close_world(world)


def _train(config: Stage2Config, setup: Stage2Setup, world: World, resume: str | None, progress: bool) -> Path:
    run = Path(config.out_dir)
    if world.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_config(config, run)
    with RunLock(run, world):
        clips = OnlineClips(config, setup, world.device) if config.online else CachedClips(config)
        batch = global_batch(config, world.dp_size)
        steps_of = BucketSteps(clips.bucket_of, batch, config.seed)  # refused here when no bucket holds a batch
        model = _build(config, setup, world)
        if world.is_main:
            print(
                f"stage2 {config.objective.align.mode}: experts {', '.join(model.experts)} "
                f"({parameter_count(model.experts) / 1e6:.2f} M parameters), projectors "
                f"{parameter_count(model.projectors) / 1e6:.2f} M; {len(clips)} clips; "
                f"{world.size} process(es): dp {world.dp_size} × ulysses {world.cp}; global batch {batch} = "
                f"{config.optim.batch_size} clip(s) × accumulate {config.optim.accumulate} × dp {world.dp_size}"
            )
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(config.optim.warmup_steps, config.optim.steps, config.optim.lr_decay)
        )
        ema = EMAModel(trained, decay=config.optim.ema_decay) if config.optim.ema_decay else None
        state = TrainState(model, optimizer, scheduler, ema)
        start = 0
        if (checkpoint := resume_point(run, resume)) is not None:
            start = load_checkpoint(checkpoint, state, world)
            if world.is_main:
                print(f"resumed from {checkpoint} at step {start}")

        def step(index: int) -> dict[str, torch.Tensor]:
            rows = steps_of(index)
            batch = clips.batch(rows[local_rows(len(rows), world)], world.device)
            terms, grad_norm = train_step(model, optimizer, batch, noise_generator(config.seed, index), config, world)
            return {**terms, "grad_norm": grad_norm}

        plan = LoopPlan(
            config.optim.steps, config.log_every, config.save_every, "stage2", ("loss", "flow", "align"),
            async_save=config.async_save,
        )  # fmt: skip
        validate = _validation(config, setup, model, world, run)
        run_loop(run, world, state, config, plan, start, step, _reducer(config, world), validate, progress)
        if ema is not None:  # the pipeline gets the averaged weights
            ema.copy_to(trained)
        metadata = {"sara_config": json.dumps(asdict(config))}  # how the weights were trained, in every adapter file
        export_pipeline(model, setup.layout, RunDir(run), world, metadata, config.export_comfyui, config.export_dtype)
    return run


def _build(config: Stage2Config, setup: Stage2Setup, world: World) -> Stage2Model:
    """The model on the device: built on the CPU in one process; on many, built on meta,
    sharded, then filled from rank 0's CPU copy (no rank holds more than its shards)."""
    compute = param_dtype(config.parallel, world.device)
    if not world.distributed:
        torch.manual_seed(config.seed)
        return build_model(config, setup, compute_dtype=compute).to(world.device)
    model = build_model(config, setup, meta=True, compute_dtype=compute)
    parallelize(model, world, config.parallel)
    torch.manual_seed(config.seed)  # projectors and adapters start as in one process
    source = build_model(config, setup, compute_dtype=compute, masters=False) if world.is_main else None
    return load_from_rank0(model, source, world)


def _reducer(config: Stage2Config, world: World):
    """The step's figures from each rank's: the loss terms, and the loss they make."""

    def reduce(figures: dict[str, torch.Tensor]) -> dict[str, float]:
        terms = reduce_terms({k: figures[k] for k in ("flow", "align")}, world)
        flow, align = terms["flow"].item(), terms["align"].item()
        loss = flow + config.objective.align.weight * align
        return {"loss": loss, "flow": flow, "align": align, "grad_norm": figures["grad_norm"].item()}

    return reduce


def _validation(config: Stage2Config, setup: Stage2Setup, model: Stage2Model, world: World, run: Path):
    """Validation videos every ``validation.every`` steps and the held-out loss every
    ``validation.loss_every`` (``None`` when both are off). Both are built here, at start-up:
    a held-out batch that does not split, or a pipeline that does not load, stops the run
    before its first step, not hours in."""
    validation = config.validation
    if not validation.every and not validation.loss_every:
        return None
    heldout = HeldoutLoss(config, setup, model, world) if validation.loss_every else None
    videos = Validator(config, setup, model, world) if validation.every else None

    def after(done: int, logger) -> None:
        if heldout is not None and done % validation.loss_every == 0:
            logger.merge(done, heldout())
        if videos is not None and done % validation.every == 0:
            logger.videos("val/videos", videos(RunDir(run).samples(done)), done)

    return after
