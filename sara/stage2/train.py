"""`sara stage2 train`: continual training of the Wan DiT with flow matching + ``λ ·`` alignment.

:class:`Stage2Training` is what Stage 2 supplies to the run skeleton
(:mod:`sara.trainer.run`): the set-up resolved and checked before the world exists; the
model built (on many processes: on the meta device, parallelized — Ulysses, FSDP2 — and
filled from rank 0's copy) with its optimizer; the step; and at the end the export of the
trained expert(s) as a Diffusers-format pipeline (``RUN_DIR/pipeline``) that `WanPipeline`
and `sara stage2 generate` load. Step ``k`` trains on the global batch chosen by
``(seed, k)`` with noise drawn from ``(seed, k)`` (:mod:`sara.stage2.step`), so a
resumed run replays exactly what an uninterrupted one computes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch

from sara.config.stage2 import Stage2Config
from sara.models.aligner import parameter_count
from sara.parallel.collectives import share_in_group
from sara.parallel.context import attention_backend, set_attention
from sara.parallel.load import load_from_rank0
from sara.parallel.precision import param_dtype
from sara.parallel.world import World, launched
from sara.run_dir import RunDir
from sara.stage2.build import Stage2Setup, build_model, resolve_setup
from sara.stage2.clips import CachedClips, OnlineClips
from sara.stage2.export import export_pipeline
from sara.stage2.heldout import HeldoutLoss
from sara.stage2.loader import StepBatches, StepLoader
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import parallelize, reduce_terms
from sara.stage2.plan import check_plan, plan_run
from sara.stage2.step import global_batch, local_rows, noise_generator, train_step
from sara.stage2.validate import Validator
from sara.trainer.batches import BucketSteps
from sara.trainer.checkpoint import TrainState
from sara.trainer.logger import Logger
from sara.trainer.loop import LoopPlan
from sara.trainer.run import adamw_state, train_run

log = logging.getLogger(__name__)


def train(config: Stage2Config, resume: str | None = None, progress: bool = True) -> Path:
    """Train; returns the run folder (checkpoints, history, TensorBoard, ``pipeline/``).

    Raises:
        Stopped: SIGTERM/SIGUSR1 stopped the run after its checkpoint, before the export.
    """
    return train_run(config, Stage2Training(config), resume, progress)


class Stage2Training:
    """Stage 2 for :func:`~sara.trainer.run.train_run` (and the step ``sara bench step`` times)."""

    def __init__(self, config: Stage2Config):
        self.config = config
        self.setup = resolve_setup(config)  # the tiny presets, before the process group exists
        # every problem of the run — splits, shapes, heads, held-out batch — before any weight is read
        check_plan(plan_run(config, int(os.environ["WORLD_SIZE"]) if launched() else 1, self.setup))
        self.plan = LoopPlan(
            config.optim.steps, config.log_every, config.save_every, "stage2", ("loss", "flow", "align"),
            async_save=config.async_save,
        )  # fmt: skip

    def build(self, world: World) -> TrainState:
        config, optim = self.config, self.config.optim
        self.world = world
        # online, the first rank of each sequence-parallel group encodes its clips for the group
        self.shares = config.online and world.cp > 1
        reads = not self.shares or world.cp_rank == 0
        self.clips = OnlineClips(config, self.setup, world.device, reads) if config.online else CachedClips(config)
        batch = global_batch(config, world.dp_size)
        self.steps_of = BucketSteps(self.clips.bucket_of, batch, config.seed)  # refused when no bucket holds a batch
        batches = StepBatches(self.clips.reader if reads else None, self.steps_of, local_rows(batch, world))
        self.loader = StepLoader(batches, optim.steps, config.data, world.device)
        self.waited = (0.0, 0)  # the loader's wait and batches served at the last reduce
        self.model = _build(config, self.setup, world)
        log.info(
            f"stage2 {config.objective.align.mode}: experts {', '.join(self.model.experts)} "
            f"({parameter_count(self.model.experts) / 1e6:.2f} M parameters), projectors "
            f"{parameter_count(self.model.projectors) / 1e6:.2f} M; {len(self.clips)} clips; "
            f"{world.size} process(es): dp {world.dp_size} × ulysses {world.cp}; global batch {batch} = "
            f"{optim.batch_size} clip(s) × accumulate {optim.accumulate} × dp {world.dp_size}"
        )
        self.state = adamw_state(self.model, optim, optim.lr_decay, optim.ema_decay)
        # built at start-up: a held-out batch that does not split, or a pipeline that does not
        # load, stops the run before its first step, not hours in
        validation = config.validation
        self.heldout = HeldoutLoss(config, self.setup, self.model, world) if validation.loss_every else None
        self.videos = Validator(config, self.setup, self.model, world) if validation.every else None
        return self.state

    def step(self, index: int) -> dict[str, torch.Tensor]:
        loaded = self.loader(index)
        batch = self.clips.to_device(loaded, self.world.device) if loaded is not None else None
        if self.shares:
            batch = share_in_group(batch, self.world)
        noise = noise_generator(self.config.seed, index)
        terms, grad_norm = train_step(self.model, self.state.optimizer, batch, noise, self.config, self.world)
        return {**terms, "grad_norm": grad_norm}

    def reduce(self, figures: dict[str, torch.Tensor]) -> dict[str, float]:
        """The step's figures from each rank's: the loss terms, and the loss they make; and
        ``data_s``, this rank's mean wait for its batches since the last call."""
        terms = reduce_terms({k: figures[k] for k in ("flow", "align")}, self.world)
        flow, align = terms["flow"].item(), terms["align"].item()
        loss = flow + self.config.objective.align.weight * align
        waited, served = self.waited
        self.waited = (self.loader.waited, self.loader.served)
        data_s = (self.loader.waited - waited) / max(1, self.loader.served - served)
        return {"loss": loss, "flow": flow, "align": align, "grad_norm": figures["grad_norm"].item(), "data_s": data_s}

    def after(self, done: int, logger: Logger) -> None:
        """The held-out loss every ``validation.loss_every`` steps, validation videos every
        ``validation.every``."""
        validation = self.config.validation
        if self.heldout is not None and done % validation.loss_every == 0:
            logger.merge(done, self.heldout())
        if self.videos is not None and done % validation.every == 0:
            logger.videos("val/videos", self.videos(RunDir(self.config.out_dir).samples(done)), done)

    def finish(self, state: TrainState, run: RunDir) -> None:
        if state.ema is not None:  # the pipeline gets the averaged weights
            state.ema.copy_to(state.trained)
        metadata = {"sara_config": json.dumps(asdict(self.config))}  # how the weights were trained, in every adapter
        config = self.config
        export_pipeline(
            self.model, self.setup.layout, run, self.world, metadata, config.export_comfyui, config.export_dtype
        )


def _build(config: Stage2Config, setup: Stage2Setup, world: World) -> Stage2Model:
    """The model on the device: built on the CPU in one process; on many, built on meta,
    sharded, then filled from rank 0's CPU copy (no rank holds more than its shards)."""
    compute = param_dtype(config.parallel, world.device)
    backend = attention_backend(config.parallel, world.device)
    log.info(f"attention backend {backend} on {world.device.type}, compute dtype {str(compute).removeprefix('torch.')}")
    if not world.distributed:
        torch.manual_seed(config.seed)
        model = build_model(config, setup, compute_dtype=compute).to(world.device)
    else:
        model = build_model(config, setup, meta=True, compute_dtype=compute)
        parallelize(model, world, config.parallel)
        torch.manual_seed(config.seed)  # projectors and adapters start as in one process
        source = build_model(config, setup, compute_dtype=compute, masters=False) if world.is_main else None
        model = load_from_rank0(model, source, world)
    for dit in model.experts.values():
        set_attention(dit, backend)
    return model
