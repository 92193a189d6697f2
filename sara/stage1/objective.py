"""One Stage 1 step's inputs and loss: saliency BCE + Dice and the global head's InfoNCE.

The saliency terms are per sample (a clip read against a prompt); InfoNCE is per clip:
each distinct clip of the batch, embedded from its video alone, against the embeddings of
the full captions of the batch's clips.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sara.config.stage1 import Stage1LossConfig
from sara.losses import info_nce, saliency_losses
from sara.models.aligner import SemanticAligner
from sara.stage1.features import Stage1Features


def gather(features: Stage1Features, samples: Tensor, clips: Tensor, device: torch.device) -> dict[str, Tensor]:
    """On ``device``: the tensors of the samples ``samples`` (S_b,), and the tokens of the
    clips ``clips`` (C_b,) this process embeds for InfoNCE."""
    prompt_rows = features.prompt_row[samples]
    clip_rows = features.clip_of[samples]
    return {
        "visual": features.tokens[clip_rows].to(device),  # (B, N, Dv)
        "text": features.text[prompt_rows].to(device),  # (B, L, Dt)
        "text_mask": features.text_mask[prompt_rows].to(device),  # (B, L)
        "target": features.targets[samples].to(device),  # (B, N)
        "clip_visual": features.tokens[clips].to(device),  # (C_b, N, Dv)
    }


def contrast(features: Stage1Features, global_clips: Tensor, device: torch.device) -> dict[str, Tensor]:
    """The InfoNCE targets of a step's distinct clips ``global_clips`` (C,)."""
    captions = features.clip_caption[global_clips]  # (C,) rows of the embedding table
    return {
        "embedding": features.embeddings[captions].to(device),  # (C, E)
        "same_text": (captions[:, None] == captions[None, :]).to(device),  # (C, C)
    }


def stage1_loss(
    aligner: SemanticAligner,
    batch: dict[str, Tensor],
    weights: Stage1LossConfig,
    gather_videos: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the three terms, and each term (tensors: no host sync in the step).

    ``gather_videos`` turns this process's clip embeddings ``(C_b, E)`` into those of every
    distinct clip of the step ``(C, E)`` (data parallelism: ``sara.parallel``); by default
    this process holds them all."""
    out = aligner(batch["visual"], batch["text"], batch["text_mask"])
    bce, dice = saliency_losses(out.saliency_logits.float(), batch["target"])
    video = aligner.embed(batch["clip_visual"]).float()  # (C_b, E): the video alone
    video = gather_videos(video) if gather_videos is not None else video  # (C, E)
    nce = info_nce(video, batch["embedding"], aligner.logit_scale, batch["same_text"])
    total = weights.bce * bce + weights.dice * dice + weights.infonce * nce
    return total, {"bce": bce.detach(), "dice": dice.detach(), "infonce": nce.detach()}
