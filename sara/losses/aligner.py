"""Losses of the Stage 1 aligner: saliency (BCE + Dice) and symmetric InfoNCE.

Pure tensor functions: no model calls, no ``torch.distributed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on 1 / temperature


def saliency_losses(logits: Tensor, target: Tensor, eps: float = 1.0) -> tuple[Tensor, Tensor]:
    """BCE and soft Dice of per-token saliency logits against covered fractions.

    Args:
        logits: ``[B, N]`` saliency logits.
        target: ``[B, N]`` in ``[0, 1]``: the share of each token's cell the entity covers.
        eps: Dice smoothing; keeps an empty target with an empty prediction at loss 0.

    Returns:
        ``(bce, dice)``: mean BCE over tokens; ``1 − Dice`` averaged over samples.
    """
    if logits.shape != target.shape or logits.dim() != 2:
        raise ValueError(f"target: shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} ([B, N])")
    target = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid()
    overlap = (prob * target).sum(-1)  # (B,)
    dice = 1 - (2 * overlap + eps) / (prob.sum(-1) + target.sum(-1) + eps)
    return bce, dice.mean()


def info_nce(visual: Tensor, text: Tensor, logit_scale: Tensor, same_text: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between row-paired visual and text embeddings.

    Args:
        visual: ``[B, E]`` pooled aligner features (normalised here).
        text: ``[B, E]`` caption embeddings; row ``i`` is the positive of ``visual[i]``.
        logit_scale: scalar ``log(1 / temperature)``, learnable; capped at ``log(100)``.
        same_text: optional ``[B, B]`` bool, ``True`` where two rows carry the same caption.
            Those off-diagonal pairs are left out of both softmaxes: a caption repeated in
            the batch is neither a second positive nor a false negative.

    Returns:
        Scalar: the mean of the visual→text and text→visual cross-entropies.
    """
    if visual.dim() != 2 or visual.shape != text.shape:
        raise ValueError(f"text: shape {tuple(text.shape)} does not match visual {tuple(visual.shape)} ([B, E])")
    scale = logit_scale.clamp(max=torch.log(torch.tensor(MAX_LOGIT_SCALE))).exp()
    logits = scale * F.normalize(visual, dim=-1) @ F.normalize(text, dim=-1).T  # (B, B)
    labels = torch.arange(len(logits), device=logits.device)
    if same_text is not None:
        duplicate = same_text & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(duplicate, float("-inf"))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
