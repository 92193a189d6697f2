"""Resolution buckets and a sampler of same-bucket batches across data-parallel ranks."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Bucket:
    """A clip shape every sample of a batch shares."""

    frames: int
    height: int
    width: int

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width


def assign_bucket(height: int, width: int, buckets: Sequence[Bucket], available: int | None = None) -> int:
    """Index of the bucket of the longest length that fits ``available`` frames (the shortest
    when none fits: loading names the clip too short; any when unknown), and among those the
    one whose aspect ratio is closest (in log scale) to ``width / height``."""
    lengths = sorted({b.frames for b in buckets})
    fitting = [n for n in lengths if available is None or n <= available]
    frames = max(fitting) if fitting else lengths[0]
    aspect = math.log(width / height)
    candidates = [i for i, b in enumerate(buckets) if b.frames == frames]
    return min(candidates, key=lambda i: abs(math.log(buckets[i].width / buckets[i].height) - aspect))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices from one bucket each, shuffled per ``(seed, epoch)``.

    Every rank builds the same global list of batches and takes every ``world_size``-th
    one, so ranks never share a sample; the list is cut to a multiple of ``world_size``
    so that all ranks run the same number of steps. Incomplete batches are dropped.
    """

    def __init__(self, bucket_of: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: must be in [0, {world_size}), got {rank}")
        self.bucket_of = list(bucket_of)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before iterating, as with ``DistributedSampler``)."""
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        members: dict[int, list[int]] = {}
        for index, bucket in enumerate(self.bucket_of):
            members.setdefault(bucket, []).append(index)
        batches = []
        for bucket in sorted(members):
            indices = members[bucket]
            order = torch.randperm(len(indices), generator=generator).tolist()
            shuffled = [indices[i] for i in order]
            full = len(shuffled) - len(shuffled) % self.batch_size
            batches += [shuffled[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in order]
        return batches[: len(batches) - len(batches) % self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._global_batches()[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(self._global_batches()) // self.world_size
