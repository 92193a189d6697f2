"""The Semantic Aligner: V-JEPA 2 tokens, read in the light of a caption.

Visual tokens attend to the caption's tokens (cross-attention), optionally to each other
(self-attention), and come out as *enhanced features*. A per-token saliency logit reads
them (how much the token belongs to what the caption names): a bilinear match between
each enhanced token and the pooled caption, as in open-vocabulary segmentation heads —
the text selects *which* features count, which a head reading the tokens alone would have
to learn through the fusion blocks first. Stage 2 calls :meth:`SemanticAligner.saliency`.

**The global head sees the video alone.** Its embedding is trained with InfoNCE against
an embedding of the clip's caption, so it must not have read that caption: pooled from
tokens that cross-attended to it, the head could match the caption from the text alone
and never look at the video. :meth:`SemanticAligner.embed` runs the same fusion blocks with
the caption replaced by one learned *null* token — cross-attention over a single key adds
the same vector to every visual token, so no caption reaches the embedding — then pools
(attention pooling) and projects. The blocks the saliency path uses still learn from the
InfoNCE term, and retrieval with the embedding is true video → text retrieval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sara.config.stage1 import ALIGNER_SIZES, AlignerSize


@dataclass
class AlignerOutput:
    saliency_logits: Tensor  # (B, N)
    features: Tensor  # (B, N, dim) enhanced visual tokens


class FusionBlock(nn.Module):
    """Pre-norm residual block: cross-attention to the caption, self-attention, MLP."""

    def __init__(self, size: AlignerSize):
        super().__init__()
        self.norm_query, self.norm_text = nn.LayerNorm(size.dim), nn.LayerNorm(size.dim)
        self.cross = nn.MultiheadAttention(size.dim, size.heads, batch_first=True)
        self.norm_self = nn.LayerNorm(size.dim) if size.self_attention else None
        self.attn = nn.MultiheadAttention(size.dim, size.heads, batch_first=True) if size.self_attention else None
        hidden = int(size.dim * size.mlp_ratio)
        self.norm_mlp = nn.LayerNorm(size.dim)
        self.mlp = nn.Sequential(nn.Linear(size.dim, hidden), nn.GELU(), nn.Linear(hidden, size.dim))

    def forward(self, x: Tensor, text: Tensor, text_pad: Tensor) -> Tensor:
        """``x`` (B, N, d), ``text`` (B, L, d), ``text_pad`` (B, L) True at padding."""
        kv = self.norm_text(text)
        x = x + self.cross(self.norm_query(x), kv, kv, key_padding_mask=text_pad, need_weights=False)[0]
        if self.attn is not None:
            h = self.norm_self(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


class SemanticAligner(nn.Module):
    def __init__(self, size: str | AlignerSize, visual_dim: int, text_dim: int, embed_dim: int):
        super().__init__()
        if isinstance(size, str):
            if size not in ALIGNER_SIZES:
                raise ValueError(f"aligner size {size!r}; choose one of {', '.join(ALIGNER_SIZES)}")
            size = ALIGNER_SIZES[size]
        self.size = size
        self.visual_in = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, size.dim))
        self.text_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, size.dim))
        self.blocks = nn.ModuleList(FusionBlock(size) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.dim)
        self.saliency_token = nn.Linear(size.dim, size.dim)  # token side of the bilinear match
        self.saliency_text = nn.Linear(size.dim, size.dim)  # caption side
        self.saliency_bias = nn.Parameter(torch.zeros(()))
        self.null_text = nn.Parameter(torch.randn(1, 1, size.dim) * 0.02)  # the caption the global head reads
        self.pool_query = nn.Parameter(torch.randn(1, 1, size.dim) * 0.02)
        self.pool = nn.MultiheadAttention(size.dim, size.heads, batch_first=True)
        self.global_head = nn.Linear(size.dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # InfoNCE temperature 0.07 at start

    def _fuse(self, visual: Tensor, text: Tensor, text_pad: Tensor) -> Tensor:
        """Enhanced features ``(B, N, d)`` of ``visual`` (B, N, Dv) read against ``text`` (B, L, d)."""
        x = self.visual_in(visual)  # (B, N, d)
        for block in self.blocks:
            x = block(x, text, text_pad)
        return self.norm(x)

    def forward(self, visual: Tensor, text: Tensor, text_mask: Tensor) -> AlignerOutput:
        """``visual`` (B, N, Dv) V-JEPA tokens; ``text`` (B, L, Dt) caption tokens; ``text_mask`` (B, L) True at words."""
        t = self.text_in(text)  # (B, L, d)
        x = self._fuse(visual, t, ~text_mask)  # (B, N, d)
        words = text_mask.unsqueeze(-1).to(t.dtype)  # (B, L, 1)
        caption = (t * words).sum(1) / words.sum(1).clamp(min=1)  # (B, d) mean over words
        match = torch.einsum("bnd,bd->bn", self.saliency_token(x), self.saliency_text(caption))
        return AlignerOutput(match / self.size.dim**0.5 + self.saliency_bias, x)  # logits (B, N)

    def embed(self, visual: Tensor) -> Tensor:
        """The global head: ``visual`` (B, N, Dv) → unnormalised embedding ``(B, E)``, from the video alone."""
        null = self.null_text.expand(len(visual), -1, -1)  # (B, 1, d)
        x = self._fuse(visual, null, torch.zeros(len(visual), 1, dtype=torch.bool, device=visual.device))
        query = self.pool_query.expand(len(x), -1, -1)  # (B, 1, d)
        pooled = self.pool(query, x, x, need_weights=False)[0].squeeze(1)  # (B, d)
        return self.global_head(pooled)

    def saliency(self, visual: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """Per-token saliency ``[B, N]`` in [0, 1] on the V-JEPA grid (what routes the Stage 2 loss)."""
        return self.forward(visual, text, text_mask).saliency_logits.sigmoid()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
