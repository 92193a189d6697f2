"""``sara moalign train``: MoAlign's motion head (:class:`sara.models.motion.MotionHead`) fitted
on the cache's teacher tokens to predict their optical flow (:mod:`sara.stage2.flow`, stored
by precompute).

The head trains with AdamW on smooth-L1 between its predicted and the stored token flow,
over random batches of clips of one grid shape, and is written to ``align.motion.head``
(default ``<cache>/motion_head``) with how it was fitted, including the flow's error before
(predicting zero) and after, on every clip.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from sara.config.stage2 import Stage2Config
from sara.models.motion import MotionHead, save_motion_head
from sara.models.weights import seeded
from sara.stage2.build import cache_dir, motion_head_folder
from sara.stage2.cache import FeatureCache, fingerprint


def _clips_by_grid(cache) -> dict[tuple, list[int]]:
    """Positions of the cache's clips, grouped by the shape of their flow grid."""
    groups: dict[tuple, list[int]] = {}
    for position in range(len(cache)):
        if "flow" not in cache.keys(position):
            raise ValueError(
                f"{cache.folder}: clip {cache.records[position]} has no flow (precompute into a new cache with precompute.flow=true)"
            )
        groups.setdefault(cache.shape(position, "flow"), []).append(position)
    return groups


def _sample(cache, positions: list[int]) -> tuple[Tensor, Tensor]:
    """Teacher tokens ``[b, T, H, W, D]`` and token flow ``[b, T, H, W, 2]`` of clips of one grid."""
    clips = [cache[p] for p in positions]
    flow = torch.stack([c["flow"].float() for c in clips])
    tokens = torch.stack([c["vfm"].float().view(*c["flow"].shape[:3], -1) for c in clips])
    return tokens, flow


@torch.no_grad()
def _error(head: MotionHead | None, cache, groups: dict[tuple, list[int]]) -> float:
    """Mean end-point error (teacher pixels) over every clip; ``head=None``: of predicting zero."""
    total, count = 0.0, 0
    for positions in groups.values():
        for start in range(0, len(positions), 16):
            tokens, flow = _sample(cache, positions[start : start + 16])
            guess = torch.zeros_like(flow) if head is None else head(tokens)
            total += (guess - flow).norm(dim=-1).sum().item()
            count += flow[..., 0].numel()
    return total / count


def train_motion_head(config: Stage2Config, cache: FeatureCache, progress: bool = True) -> tuple[MotionHead, dict]:
    """Fit a head on ``cache`` (a :class:`sara.stage2.cache.FeatureCache` with flow) as
    ``align.motion`` says; returns it and the report written beside it."""
    motion = config.objective.align.motion
    groups = _clips_by_grid(cache)
    width = cache[0]["vfm"].shape[-1]
    generator = torch.Generator().manual_seed(config.seed)
    with seeded(config.seed):
        head = MotionHead(width, motion.dim, motion.hidden)
    optimizer = torch.optim.AdamW(head.parameters(), motion.lr)
    before = _error(None, cache, groups)
    start, losses = time.perf_counter(), []
    shapes = list(groups)
    for _ in tqdm(range(motion.steps), desc="moalign motion head", disable=not progress):
        positions = groups[shapes[int(torch.randint(len(shapes), (1,), generator=generator))]]
        chosen = torch.randint(len(positions), (min(motion.batch_size, len(positions)),), generator=generator)
        tokens, flow = _sample(cache, [positions[i] for i in chosen.tolist()])
        loss = F.smooth_l1_loss(head(tokens), flow)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    head.eval().requires_grad_(False)
    report = {
        "steps": motion.steps,
        "clips": len(cache),
        "seconds": round(time.perf_counter() - start, 1),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "end_point_error": {"zero flow": round(before, 4), "head": round(_error(head, cache, groups), 4)},
    }
    return head, report


def fit_motion_head(config: Stage2Config, progress: bool = True) -> tuple[Path, dict]:
    """``sara moalign train``: fit the head on the run's cache and write it where
    ``align.motion.head`` (or, unset, the cache) says; returns its folder and report."""
    head, report = train_motion_head(config, FeatureCache(cache_dir(config), fingerprint(config)), progress)
    return save_motion_head(head, motion_head_folder(config), report), report
