"""The oracle teacher: token features made from what the renderer drew, not learned.

For shapes-world clips, each token of the V-JEPA 2 grid gets the share of its cell covered
by each entity colour and by the rest (background): ``[N, K + 1]``. Under TRD's cosine
relations, tokens of one entity are alike, tokens of different entities orthogonal, and
background tokens alike among themselves — the scene's structure, exactly. It is the upper
bound of a teacher for the toy reproduction (the tiny V-JEPA 2's random features are the
lower one); it knows nothing of real video.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sara.data.masks import pool_to_grid
from sara.shapes.palette import PALETTE, colour_masks

WIDTH = len(PALETTE) + 1  # one feature per entity colour, and the background


class OracleTeacher(torch.nn.Module):
    """``[B, T, 3, H, W]`` uint8 frames (as V-JEPA 2 reads them) -> ``[B, N, WIDTH]`` features on
    the grid of ``tubelet`` frames × ``patch``² pixels per token."""

    def __init__(self, tubelet: int, patch: int):
        super().__init__()
        self.tubelet, self.patch = tubelet, patch

    def forward(self, frames: Tensor) -> Tensor:
        features = []
        for clip in frames:  # (T, 3, H, W)
            masks = colour_masks(clip.permute(0, 2, 3, 1))  # (K, T, H, W)
            shares = torch.stack([pool_to_grid(m, self.tubelet, self.patch) for m in masks])  # (K, T', h, w)
            background = (1 - shares.sum(0, keepdim=True)).clamp(min=0)  # (1, T', h, w)
            features.append(torch.cat([shares, background]).flatten(1).T)  # (N, K + 1)
        return torch.stack(features)
