"""MoAlign's relational alignment (ICLR 2026): the DiT's token relations matched to those of a
motion subspace, frame by frame and across frames.

The target ``M [B, T·S, Dm]`` is a low-dimensional motion feature per teacher token (a head on
the frozen teacher trained to predict optical flow, :mod:`sara.models.motion`), on the same
time-major grid of ``T`` frames of ``S`` tokens as the projected DiT tokens ``Z``. With
``S_Z = Ẑ Ẑᵀ`` and ``S_M = M̂ M̂ᵀ`` the cosine relations, the loss is

    L = 1/T Σ_f mean_{i,j ∈ f} |S_Z − S_M|_ij
      + Σ_{f≠g} ω_fg mean_{i ∈ f, j ∈ g} |S_Z − S_M|_ij / Σ_{f≠g} ω_fg,   ω_fg = exp(−|f − g| / τ)

a spatial term inside each frame and a temporal term between frames that weighs near frames
most. No margin and no text: every pair counts, by its frames' distance alone. Pure tensor
functions: no model calls, no ``torch.distributed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def frame_pair_weights(frames: int, tau: float) -> Tensor:
    """``[T, T]`` weights of each frame pair's mean relation error: ``1/T`` on the diagonal
    (the spatial term), ``ω_fg / Σ ω`` off it (the temporal term; none for one frame)."""
    distance = (torch.arange(frames)[:, None] - torch.arange(frames)[None, :]).abs().double()
    temporal = torch.exp(-distance / tau).fill_diagonal_(0.0)
    if frames > 1:
        temporal /= temporal.sum()
    return temporal + torch.eye(frames, dtype=torch.float64) / frames


def _row_frame(z_f: Tensor, m_f: Tensor, z: Tensor, m: Tensor, weights_f: Tensor) -> Tensor:
    """One row frame's share: ``Σ_g weights_f[g] · mean |S_Z − S_M|`` over its blocks."""
    batch, per_frame, _ = z_f.shape
    error = (z_f @ z.mT - m_f @ m.mT).abs()  # (B, S, T·S)
    block_means = error.view(batch, per_frame, -1, per_frame).mean(dim=(1, 3))  # (B, T)
    return (block_means * weights_f).sum(dim=1).mean()


def moalign_loss(
    pred: Tensor, target: Tensor, frames: int, tau: float = 10.0, part: tuple[int, int] = (0, 1)
) -> Tensor:
    """MoAlign's loss (module docstring) of ``pred [B, T·S, Dp]`` (carries the gradient) against
    ``target [B, T·S, Dm]`` (detached) on a grid of ``frames`` time-major frames.

    Row frame by row frame, each recomputed in backward, so that memory holds one ``S × T·S``
    block of relations at a time. ``part = (i, n)``: only the ``i``-th of ``n`` shares of the
    row frames (sequence parallelism gives each rank one); the shares sum to the loss.

    Returns:
        The scalar loss in fp32 (fp64 for fp64 inputs).
    """
    if pred.dim() != 3 or target.dim() != 3 or pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)}: expected [B, N, D] alike in B, N")
    if frames < 1 or pred.shape[1] % frames:
        raise ValueError(f"frames: {frames} does not divide the {pred.shape[1]} tokens")
    if not tau > 0:
        raise ValueError(f"tau: must be > 0, got {tau}")
    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"part: ({index}, {count}) is not one of {count} shares")
    compute = torch.float64 if pred.dtype == torch.float64 else torch.float32
    z = F.normalize(pred.to(compute), dim=-1)
    m = F.normalize(target.detach().to(compute), dim=-1)
    per_frame = pred.shape[1] // frames
    weights = frame_pair_weights(frames, tau).to(device=pred.device, dtype=compute)  # (T, T)
    total = z.new_zeros(())
    for f in torch.tensor_split(torch.arange(frames), count)[index].tolist():
        rows = slice(f * per_frame, (f + 1) * per_frame)
        total = total + checkpoint(_row_frame, z[:, rows], m[:, rows], z, m, weights[f], use_reentrant=False)
    return total
