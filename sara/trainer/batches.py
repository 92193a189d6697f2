"""What the trainers of both stages share: the learning-rate shape and a batch order that is a
pure function of ``(seed, step)``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from sara.config.stage2 import LR_DECAYS
from sara.data.buckets import BucketBatchSampler


def lr_factor(warmup: int, total: int, decay: str = "cosine") -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then ``cosine`` decay to zero at ``total`` or ``constant``."""
    if decay not in LR_DECAYS:
        raise ValueError(f"decay: {decay!r}; choose one of {', '.join(LR_DECAYS)}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if decay == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def batch_samples(step: int, num_samples: int, batch_size: int, seed: int) -> torch.Tensor:
    """Samples of step ``step``: slice of the permutation of its epoch (last partial batch dropped).

    A pure function of its arguments, so a resumed run replays exactly the batches an
    uninterrupted one would have seen.
    """
    per_epoch = max(1, num_samples // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size : (position + 1) * batch_size]


class BucketSteps:
    """The samples of each step, drawn from one shape bucket at a time: a pure function of
    ``(seed, step)`` like :func:`batch_samples`, built on :class:`BucketBatchSampler`."""

    def __init__(self, bucket_of: Sequence[int], batch_size: int, seed: int):
        self.sampler = BucketBatchSampler(bucket_of, batch_size, seed)
        self.per_epoch = len(self.sampler)
        if self.per_epoch == 0:
            raise ValueError(
                f"optim.batch_size: no shape bucket holds a global batch of {batch_size} clips "
                "(batch_size × accumulate × data-parallel ranks)"
            )
        self._epoch, self._batches = -1, []

    def epoch(self, step: int) -> int:
        """The pass over the data that ``step`` belongs to."""
        return step // self.per_epoch

    def __call__(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._batches = epoch, list(self.sampler)
        return self._batches[position]
