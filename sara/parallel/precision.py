"""The dtype a run computes in, and the autocast region that makes it so.

One rule for one process and for many: with a compute dtype of bf16 (``parallel.param_dtype``
``auto`` on CUDA, or ``bfloat16`` anywhere, CPUs included) the forward runs under autocast
in bf16 while the trained weights keep fp32 masters; FSDP gathers parameters in that dtype
too, so a sharded step and a step of one process compute the same products. Inputs are
never cast on the way in (``sara.stage2.parallelize``): latents, noise, σ and the timesteps
``σ · 1000`` stay fp32 as ``WanPipeline`` feeds them.
"""

from __future__ import annotations

import torch

from sara.config.parallel import ParallelConfig


def param_dtype(config: ParallelConfig, device: torch.device) -> torch.dtype:
    """The dtype the DiT computes in (and FSDP gathers parameters in): ``auto`` is bf16 on
    CUDA and fp32 on a CPU."""
    if config.param_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, config.param_dtype)


def autocast(dtype: torch.dtype, device: torch.device) -> torch.autocast:
    """The region a forward in ``dtype`` runs in (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
