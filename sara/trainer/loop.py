"""The training loop both stages run: steps, log points, checkpoints, preemption.

A stage supplies ``step(k) -> figures`` (forward, backward, optimizer step on this rank;
figures are this rank's tensors) and ``reduce(figures) -> floats`` (the step's figures
over all ranks; a collective, so it runs on log steps only). The loop owns the rest: the
scheduler and EMA updates, history, the tracker and the bar on rank 0, checkpoints every
``save_every`` steps and at the end (optionally written in the background and published
as soon as every rank's shards are on disk), and a clean stop — checkpoint, then
:class:`~sara.trainer.preemption.Stopped` — when any rank receives SIGTERM or SIGUSR1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sara.parallel.collectives import world_max
from sara.parallel.world import World
from sara.trainer.checkpoint import TrainState, async_group, begin_checkpoint
from sara.trainer.logger import Logger
from sara.trainer.memory import peak_mib
from sara.trainer.preemption import Preemption, Stopped


@dataclass(frozen=True)
class LoopPlan:
    steps: int  # optimizer steps in all
    log_every: int
    save_every: int
    desc: str  # the bar's label
    shown: tuple[str, ...]  # figures on the bar
    consolidated: bool = False  # checkpoints also hold model.safetensors (small models)
    async_save: bool = False  # write checkpoint shards in the background (published at the next one)


def run_loop(
    run: Path,
    world: World,
    state: TrainState,
    config: Any,
    plan: LoopPlan,
    start: int,
    step: Callable[[int], dict[str, Tensor]],
    reduce: Callable[[dict[str, Tensor]], dict[str, float]],
    after: Callable[[int, Logger], None] | None = None,
    progress: bool = True,
) -> None:
    """Steps ``start … plan.steps − 1``.

    Raises:
        Stopped: a signal stopped the run, after a checkpoint of the last step done.
    """
    settings = asdict(config)
    logger = Logger(run, start, plan.steps, plan.desc, plan.shown, world.is_main, progress, config.logging, settings)
    trained = state.trained  # once: the EMA steps over them every step
    tick, since = time.perf_counter(), start
    stopped, pending = None, None
    if plan.async_save:
        async_group(world)
    with Preemption(world) as signals:
        for index in range(start, plan.steps):
            figures = step(index)
            state.scheduler.step()
            if state.ema is not None:
                state.ema.step(trained)
            logger.advance()
            done = index + 1
            if done % plan.log_every == 0 or done == plan.steps:
                row = {"step": done, **reduce(figures), "lr": state.scheduler.get_last_lr()[0]}
                row["s_per_step"] = (time.perf_counter() - tick) / (done - since)
                row["peak_mib"] = world_max(torch.tensor(peak_mib(world.device)), world).item()  # the fullest rank
                logger.log(row)
                tick, since = time.perf_counter(), done
            if after is not None:
                after(done, logger)
            # one small all-reduce a step: whether any rank was asked to stop, and whether every
            # rank's shards of a checkpoint written in the background are on disk
            stopping, unwritten = signals.agreed(pending is not None and not pending.written())
            if pending is not None and not unwritten:  # published as soon as it is whole
                pending.publish()
                pending = None
            if done % plan.save_every == 0 or done == plan.steps or stopping:
                logger.save()
                if pending is not None:  # the previous checkpoint is complete before the next begins
                    pending.publish()
                pending = begin_checkpoint(run, done, state, config, world, plan.consolidated, plan.async_save)
                if not plan.async_save or done == plan.steps or stopping:
                    pending.publish()
                    pending = None
            if stopping and done < plan.steps:
                stopped = done
                break
    logger.close()
    if stopped is not None:
        raise Stopped(stopped)
