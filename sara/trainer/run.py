"""One training run, whatever it trains: the skeleton Stage 1 and Stage 2 share.

A stage implements :class:`Training` — its model built on a world, one optimizer step,
the step's figures over all ranks, what follows a step (evaluation, validation) and what
ends the run (metrics, export). :func:`train_run` owns the rest, in this order: the world,
the run folder and its config snapshot, the run lock, the resume point, the loop
(:mod:`sara.trainer.loop`: log points, checkpoints, preemption), then the stage's finish.
A Training's constructor runs before the process group exists: the tiny presets are
written there, by every rank for itself (once the group exists, transformers saves weights
on rank 0 alone and another rank's copy would be incomplete), and every problem of the
run's set-up is raised there, before any weight is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from sara.config import save_config
from sara.parallel.world import World, close_world, init_world
from sara.run_dir import RunDir
from sara.trainer.batches import lr_factor
from sara.trainer.checkpoint import TrainState, load_checkpoint, resume_point, trained_parameters
from sara.trainer.ema import LocalEMA
from sara.trainer.logger import Logger
from sara.trainer.loop import LoopPlan, run_loop
from sara.trainer.preemption import RunLock

log = logging.getLogger(__name__)


class Training(Protocol):
    """What a stage supplies to :func:`train_run`."""

    plan: LoopPlan

    def build(self, world: World) -> TrainState:
        """Data, model and optimizer on ``world`` (see :func:`adamw_state`)."""

    def step(self, index: int) -> dict[str, Tensor]:
        """Optimizer step ``index`` on this rank; its figures are this rank's tensors."""

    def reduce(self, figures: dict[str, Tensor]) -> dict[str, float]:
        """The step's figures over every rank (a collective: log steps only)."""

    def after(self, done: int, logger: Logger) -> None:
        """After step ``done`` (1-based), on every rank: evaluation, validation."""

    def finish(self, state: TrainState, run: RunDir) -> None:
        """After the last step: final metrics, the export."""


def adamw_state(model: nn.Module, optim: Any, decay: str = "cosine", ema_decay: float | None = None) -> TrainState:
    """AdamW over ``model``'s trained parameters with ``optim``'s ``lr``, ``weight_decay``,
    a linear warm-up of ``warmup_steps`` then ``decay`` over ``steps``; an EMA of the
    trained parameters when ``ema_decay`` is set."""
    trained = trained_parameters(model)
    optimizer = torch.optim.AdamW(trained, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim.warmup_steps, optim.steps, decay))
    ema = LocalEMA(trained, decay=ema_decay) if ema_decay else None
    return TrainState(model, optimizer, scheduler, ema)


def train_run(config: Any, training: Training, resume: str | None = None, progress: bool = True) -> Path:
    """Run ``training`` under ``config`` (its ``out_dir``, ``parallel``, ``device``, and
    what the loop reads); ``resume`` a checkpoint folder, ``latest`` or ``None``. Returns
    the run folder.

    Raises:
        Stopped: a signal stopped the run after its checkpoint, before ``finish``.
    """
    world = init_world(config.parallel, config.device)
    try:
        run = RunDir(config.out_dir)
        if world.is_main:
            run.path.mkdir(parents=True, exist_ok=True)
            save_config(config, run.path)
        with RunLock(run.path, world):
            state = training.build(world)
            start = 0
            if (checkpoint := resume_point(run.path, resume)) is not None:
                start = load_checkpoint(checkpoint, state, world)
                log.info(f"resumed from {checkpoint} at step {start}")
            run_loop(
                run.path, world, state, config, training.plan, start,
                training.step, training.reduce, training.after, progress,
            )  # fmt: skip
            training.finish(state, run)
    finally:
        close_world(world)
    return run.path
