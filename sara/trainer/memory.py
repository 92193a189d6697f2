"""The one peak-memory figure both stages log."""

from __future__ import annotations

import resource

import torch


def peak_mib(device: torch.device) -> float:
    """Peak memory of this process so far, in MiB: allocated CUDA memory on a GPU, the
    resident set (``ru_maxrss``) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
