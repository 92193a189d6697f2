"""The dtype sharded parameters compute in."""

from __future__ import annotations

import torch

from sara.config.parallel import ParallelConfig


def param_dtype(config: ParallelConfig, device: torch.device) -> torch.dtype:
    """The dtype FSDP gathers parameters in for compute."""
    if config.param_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, config.param_dtype)
