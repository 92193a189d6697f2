"""Seeded inputs shared by the tests of the objective."""

from __future__ import annotations

import torch


def features(batch: int, tokens: int, dim: int, dtype=torch.float32, target_dim: int | None = None):
    """Student and teacher tokens with some shared structure, as after a little training."""
    target = torch.randn(batch, tokens, target_dim or dim, dtype=torch.float64)
    pred = torch.randn(batch, tokens, dim, dtype=torch.float64)
    shared = min(dim, target.shape[-1])
    pred[..., :shared] += 0.5 * target[..., :shared]
    return pred.to(dtype).requires_grad_(), target.to(dtype)


def hard_mask(batch: int, tokens: int, fraction: float = 0.5) -> torch.Tensor:
    """A binary saliency with about ``fraction`` of tokens set, in random order."""
    return (torch.rand(batch, tokens) < fraction).float()
