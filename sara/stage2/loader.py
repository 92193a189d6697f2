"""Stage 2's input pipeline: each step's batch read ahead by a ``DataLoader``.

The batch of step ``k`` is a pure function of ``(seed, k)`` (:class:`~sara.trainer.batches.BucketSteps`),
so the loader walks the steps themselves: item ``k`` of :class:`StepBatches` is this rank's
rows of step ``k``, read (from the cache) or decoded (online) by the clip source's reader.
``data.num_workers`` processes read ahead ``data.prefetch`` steps each, into pinned memory
on CUDA, while the DiT computes; the host-to-device copy does not block. Which process read a
batch, and when, does not change it: exact resume and world-size-invariant batches hold as
without workers. The loader iterates once over the run's remaining steps, so its workers
live as long as the run (what ``persistent_workers`` gives a loader iterated per epoch).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from sara.config.stage2 import Stage2DataConfig
from sara.trainer.batches import BucketSteps


class Reader(Protocol):
    def load(self, rows: list[int], epoch: int = 0) -> Any: ...


class StepBatches(Dataset):
    """Item ``k``: this rank's ``rows`` of step ``k``'s global batch, loaded by ``reader``
    (``None`` without one: a rank that receives its batch from another)."""

    def __init__(self, reader: Reader | None, steps_of: BucketSteps, rows: slice):
        self.reader, self.steps_of, self.rows = reader, steps_of, rows

    def __getitem__(self, step: int) -> Any:
        if self.reader is None:
            return None
        return self.reader.load(self.steps_of(step)[self.rows], self.steps_of.epoch(step))


class StepLoader:
    """Call it with a step for that step's loaded batch (on the host). Steps are asked in
    order; another step than the next restarts the loader there (a resume). ``waited``
    sums the seconds spent blocked on it over the ``served`` batches."""

    def __init__(self, batches: StepBatches, steps: int, data: Stage2DataConfig, device: torch.device):
        self.batches, self.steps, self.data, self.device = batches, steps, data, device
        self.next, self.iterator, self.waited, self.served = None, None, 0.0, 0

    def _start(self, step: int) -> None:
        # a rank whose batches another sends reads nothing: no worker processes for it
        workers = self.data.num_workers if self.batches.reader is not None else 0
        loader = DataLoader(
            self.batches,
            batch_size=None,  # an item is a whole batch
            sampler=range(step, self.steps),
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=self.data.prefetch if workers else None,
        )
        self.iterator, self.next = iter(loader), step

    def __call__(self, step: int) -> Any:
        if step != self.next:
            self._start(step)
        start = time.perf_counter()
        try:
            loaded = next(self.iterator)
        except StopIteration:
            raise IndexError(f"step {step}: past the run's optim.steps = {self.steps}") from None
        self.waited += time.perf_counter() - start
        self.next, self.served = step + 1, self.served + 1
        return loaded
