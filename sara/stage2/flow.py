"""Optical flow per teacher token, stored by precompute (``precompute.flow``): MoAlign's motion
target. Each clip's cache entry gains ``flow`` ``[T_v, H_v, W_v, 2]``: the optical flow
``(dy, dx)`` of the frames the teacher reads, on its grid (:func:`token_flow`). A shapes-world
clip decoded whole (its every frame at its rendered size) takes the exact flow of its render
facts (:mod:`sara.shapes.flow`); any other clip the flow that OpenCV's DIS estimator (medium
preset) finds between its decoded frames, as MoAlign takes RAFT's.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sara.data.manifest import Record
from sara.shapes.flow import exact_flow
from sara.stage2.align import VfmView


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
