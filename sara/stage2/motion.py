"""MoAlign's motion targets and head: optical flow per teacher token, stored by precompute, and
``sara moalign train``, which fits the head (:class:`sara.models.motion.MotionHead`) on the
cache's teacher tokens to predict it.

**Flow.** With ``precompute.flow`` each clip's cache entry gains ``flow`` ``[T_v, H_v, W_v, 2]``:
the optical flow ``(dy, dx)`` of the frames the teacher reads, on its grid (:func:`token_flow`).
A shapes-world clip decoded whole (its every frame at its rendered size) takes the exact flow
of its render facts (:mod:`sara.shapes.flow`); any other clip the flow that OpenCV's DIS
estimator (medium preset) finds between its decoded frames, as MoAlign takes RAFT's.

**The head** trains with AdamW on smooth-L1 between its predicted and the stored token flow,
over random batches of clips of one grid shape, and is written to ``align.motion.head``
(default ``<cache>/motion_head``) with how it was fitted, including the flow's error before
(predicting zero) and after, on every clip.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from sara.config.stage2 import Stage2Config
from sara.data.manifest import Record
from sara.models.motion import MotionHead, save_motion_head
from sara.models.weights import seeded
from sara.shapes.flow import exact_flow
from sara.stage2.align import VfmView
from sara.stage2.build import cache_dir, motion_head_folder


def token_flow(flow: Tensor, view: VfmView) -> Tensor:
    """Pixel flow ``[T − 1, H, W, 2]`` of a clip (``flow[t]``: frame ``t`` to ``t + 1``, in
    pixels) → ``[T_v, H_v, W_v, 2]`` on the teacher's grid, in the teacher's input pixels.

    Each frame ``f`` a tubelet holds (those :class:`VfmView` reads, all after frame 0) takes
    the flow that brought it, ``flow[f − 1]``; the tubelet's flow is their mean, resized to
    the teacher's input (vectors scaled with it) and averaged over each patch."""
    frames, height, width = flow.shape[0] + 1, flow.shape[1], flow.shape[2]
    seen = torch.arange(frames)[view.frame_indices(frames)]  # (T_seen,)
    tubelets = len(seen) // view.tubelet
    arrived = flow[seen[: tubelets * view.tubelet] - 1]  # (T_v · tubelet, H, W, 2)
    arrived = arrived.view(tubelets, view.tubelet, height, width, 2).mean(dim=1).movedim(-1, 1)  # (T_v, 2, H, W)
    size = view.size(height, width)
    if size != (height, width):
        arrived = F.interpolate(arrived, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[0] / height, size[1] / width], dtype=flow.dtype)
    return (F.avg_pool2d(arrived, view.patch) * scale[None, :, None, None]).movedim(1, -1)  # (T_v, H_v, W_v, 2)


def dis_flow(frames: Tensor) -> Tensor:
    """DIS optical flow of ``uint8 [T, 3, H, W]`` frames: ``[T − 1, H, W, 2]`` as ``(dy, dx)``."""
    estimator = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [cv2.cvtColor(f.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [estimator.calc(a, b, None)[..., ::-1] for a, b in zip(grey, grey[1:])]  # cv2 gives (dx, dy)
    return torch.from_numpy(np.ascontiguousarray(np.stack(flows)))


def clip_flow(record: Record, frames: Tensor) -> Tensor:
    """The pixel flow ``[T − 1, H, W, 2]`` of a decoded clip ``uint8 [T, 3, H, W]``: exact for
    a shapes-world clip decoded whole, else DIS."""
    facts = (record.model_extra or {}).get("render")
    count, _, height, width = frames.shape
    if facts and len(facts["entities"][0]["centres"]) == count and height == width == facts["size"]:
        return torch.from_numpy(exact_flow(facts))
    return dis_flow(frames)


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


def train_motion_head(config: Stage2Config, cache, progress: bool = True) -> tuple[MotionHead, dict]:
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
    from sara.stage2.cache import FeatureCache, fingerprint  # it imports this module: flow at precompute

    head, report = train_motion_head(config, FeatureCache(cache_dir(config), fingerprint(config)), progress)
    return save_motion_head(head, motion_head_folder(config), report), report
