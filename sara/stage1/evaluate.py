"""Held-out figures of the aligner: does its saliency find what the caption names, and only
that? Does its global embedding tell which caption a video shows?

- ``prompted_iou``: IoU of ``saliency > 0.5`` with the prompted entity's pooled mask (> 0.5).
- ``other_entity_iou``: in multi-entity clips, IoU of the prediction for entity A with the
  mask of each *other* entity B — high would mean the aligner highlights every subject.
- ``unrelated_caption_iou``: IoU with entity A's mask when the prompt is replaced by a
  held-out prompt sharing no word with any entity of the clip — high would mean the
  saliency ignores the text.
- ``caption_iou``: IoU of the saliency for a clip's full caption (what Stage 2 routes by)
  with the union of its entities' masks; present when the features hold such samples.
- ``retrieval_r1``: video → text retrieval. Each held-out clip's global embedding (from its
  video alone) against the embeddings of every distinct held-out full caption; a hit when
  the nearest is the clip's own. ``retrieval_r1_shuffled`` is the same with every video
  moved to another clip's caption (the mean over 16 such shuffles) — a control that sits at
  ``retrieval_chance`` (1 / the number of captions) unless the embedding reads something
  other than the video.

The first three are measured on the (clip, entity) samples alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sara.models.aligner import SemanticAligner
from sara.stage1.features import Stage1Features

SHUFFLES = 16  # videos-against-captions shuffles averaged in retrieval_r1_shuffled
METRICS = (
    "prompted_iou",
    "other_entity_iou",
    "unrelated_caption_iou",
    "caption_iou",
    "retrieval_r1",
    "retrieval_r1_shuffled",
    "retrieval_chance",
)


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU per row of two boolean ``[S, N]``; 1 where both are empty."""
    union = (pred | target).sum(-1)
    inter = (pred & target).sum(-1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))


@torch.no_grad()
def predict(
    aligner: SemanticAligner, features: Stage1Features, prompt_rows: Tensor, device: torch.device, chunk: int = 64
) -> Tensor:
    """Saliency ``[S, N]`` of every sample, with the given prompts."""
    saliency = []
    for start in range(0, len(features), chunk):
        rows = slice(start, start + chunk)
        out = aligner(
            features.tokens[features.clip_of[rows]].to(device),
            features.text[prompt_rows[rows]].to(device),
            features.text_mask[prompt_rows[rows]].to(device),
        )
        saliency.append(out.saliency_logits.float().sigmoid().cpu())
    return torch.cat(saliency)


@torch.no_grad()
def embed_clips(aligner: SemanticAligner, tokens: Tensor, device: torch.device, chunk: int = 64) -> Tensor:
    """Normalised global embeddings ``[C, E]`` of clips' V-JEPA tokens ``[C, N, Dv]``."""
    parts = [aligner.embed(tokens[i : i + chunk].to(device)).float().cpu() for i in range(0, len(tokens), chunk)]
    return F.normalize(torch.cat(parts), dim=-1)


def unrelated_prompts(features: Stage1Features) -> Tensor:
    """For each sample, a prompt row sharing no word with any prompt of the sample's clip."""
    distinct = list(dict.fromkeys(features.prompts))
    words = [set(p.lower().split()) for p in distinct]
    in_clip: dict[int, set[str]] = {}
    for clip, prompt in zip(features.clip_of.tolist(), features.prompts):
        in_clip.setdefault(clip, set()).update(prompt.lower().split())
    rows = []
    for sample, clip in enumerate(features.clip_of.tolist()):
        order = [(sample + k) % len(distinct) for k in range(len(distinct))]  # deterministic, varied
        fallback = next(r for r in order if distinct[r] != features.prompts[sample])
        rows.append(next((r for r in order if not words[r] & in_clip[clip]), fallback))
    row_of = dict(zip(features.prompts, features.prompt_row.tolist()))  # distinct prompt → row of the text table
    return torch.tensor([row_of[distinct[r]] for r in rows])


def retrieval(aligner: SemanticAligner, features: Stage1Features, device: torch.device) -> dict[str, float]:
    """Video → text R@1 over the clips' distinct captions, with the right videos and shuffled ones."""
    video = embed_clips(aligner, features.tokens, device)  # (C, E)
    candidates = features.clip_caption.unique()  # (K,) rows of the embedding table
    text = features.embeddings[candidates]  # (K, E)

    def r1(embedding: Tensor) -> float:
        return (candidates[(embedding @ text.T).argmax(-1)] == features.clip_caption).float().mean().item()

    rolls = range(1, min(len(video), SHUFFLES + 1))  # roll k: clip i's caption meets clip i−k's video
    return {
        "retrieval_r1": r1(video),
        "retrieval_r1_shuffled": sum(r1(video.roll(k, dims=0)) for k in rolls) / max(len(rolls), 1),
        "retrieval_chance": 1 / len(candidates),
    }


def evaluate(aligner: SemanticAligner, features: Stage1Features, device: torch.device) -> dict[str, float]:
    """The held-out figures (see the module docstring)."""
    was_training = aligner.training
    aligner.eval()
    metrics = _entity_metrics(aligner, features.select(~features.whole), device)
    if features.whole.any():
        captions = features.select(features.whole)
        saliency = predict(aligner, captions, captions.prompt_row, device)
        metrics["caption_iou"] = iou(saliency > 0.5, captions.targets > 0.5).mean().item()
    metrics |= retrieval(aligner, features, device)
    aligner.train(was_training)
    return metrics


def _entity_metrics(aligner: SemanticAligner, features: Stage1Features, device: torch.device) -> dict[str, float]:
    saliency = predict(aligner, features, features.prompt_row, device)
    unrelated = predict(aligner, features, unrelated_prompts(features), device)
    pred, truth = saliency > 0.5, features.targets > 0.5
    same_clip = features.clip_of[:, None] == features.clip_of[None, :]  # (S, S)
    a, b = (same_clip & ~torch.eye(len(features), dtype=torch.bool)).nonzero(as_tuple=True)  # entity pairs
    other = iou(pred[a], truth[b]).mean() if len(a) else torch.tensor(0.0)
    return {
        "prompted_iou": iou(pred, truth).mean().item(),
        "other_entity_iou": other.item(),
        "unrelated_caption_iou": iou(unrelated > 0.5, truth).mean().item(),
    }


def format_metrics(metrics: dict[str, float], features: Stage1Features) -> str:
    whole = int(features.whole.sum())
    lines = [
        f"held-out samples: {len(features) - whole} (clip, entity), {whole} (clip, full caption); "
        f"{len(features.tokens)} clips for retrieval"
    ]
    lines += [f"{name:>22}  {value:.3f}" for name, value in metrics.items()]
    return "\n".join(lines)
