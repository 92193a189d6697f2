"""Flow matching as Wan trains it (rectified flow, velocity target).

``x_t = (1 − σ)·x0 + σ·ε`` runs from data (σ = 0) to noise (σ = 1); the DiT predicts the
velocity ``ε − x0`` at timestep ``1000·σ``. σ comes from a uniform draw ``u`` pushed
through the shift ``σ = s·u / (1 + (s − 1)·u)``, which spends more steps at high noise
for ``s > 1`` — the same map the flow-match schedulers apply at sampling time.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def shift_sigma(u: Tensor, shift: float) -> Tensor:
    """``u`` in [0, 1] → shifted σ in [0, 1]."""
    return shift * u / (1 + (shift - 1) * u)


def noisy_latents(x0: Tensor, noise: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """``(x_t, target)`` for latents ``[B, C, F, H, W]`` and per-sample ``sigma`` ``[B]``."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise, noise - x0


def flow_matching_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between predicted and true velocity, per sample ``[B]`` (fp32)."""
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
