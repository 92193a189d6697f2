"""One Stage 1 step's inputs and loss: saliency BCE + Dice and the global head's InfoNCE."""

from __future__ import annotations

import torch
from torch import Tensor

from sara.config.stage1 import Stage1LossConfig
from sara.losses import info_nce, saliency_losses
from sara.models.aligner import SemanticAligner
from sara.stage1.features import Stage1Features


def gather(features: Stage1Features, samples: Tensor, device: torch.device) -> dict[str, Tensor]:
    """The tensors of the samples ``samples`` (S_b,), on ``device``."""
    prompt_rows = features.prompt_row[samples]
    caption_rows = features.caption_row[samples]
    return {
        "visual": features.tokens[features.clip_of[samples]].to(device),  # (B, N, Dv)
        "text": features.text[prompt_rows].to(device),  # (B, L, Dt)
        "text_mask": features.text_mask[prompt_rows].to(device),  # (B, L)
        "target": features.targets[samples].to(device),  # (B, N)
        "embedding": features.embeddings[caption_rows].to(device),  # (B, E)
        "same_text": (caption_rows[:, None] == caption_rows[None, :]).to(device),  # (B, B)
    }


def stage1_loss(
    aligner: SemanticAligner, batch: dict[str, Tensor], weights: Stage1LossConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the three terms, and each term (tensors: no host sync in the step)."""
    out = aligner(batch["visual"], batch["text"], batch["text_mask"])
    bce, dice = saliency_losses(out.saliency_logits.float(), batch["target"])
    nce = info_nce(out.embedding.float(), batch["embedding"], aligner.logit_scale, batch["same_text"])
    total = weights.bce * bce + weights.dice * dice + weights.infonce * nce
    return total, {"bce": bce.detach(), "dice": dice.detach(), "infonce": nce.detach()}
