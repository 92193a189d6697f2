"""Ground-truth saliency on the video-encoder token grid, from entity masks."""

from __future__ import annotations

import torch
from tqdm import tqdm

from sara.config.clips import ClipTiming
from sara.data.manifest import Manifest
from sara.data.masks import load_mask, pool_to_grid
from sara.data.video import decode_clip, transform_masks


def mask_saliency(
    manifest: Manifest,
    frames: int,
    size: tuple[int, int],
    tubelet: int,
    patch: int,
    timing: ClipTiming,
    progress: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """Per clip, the union of its entities' masks pooled onto the token grid.

    Each clip is decoded to ``frames`` frames of ``size`` ``(H, W)`` at the rate and window
    of ``timing`` (as the encoder sees it); a token's saliency is the covered fraction of its
    tubelet × patch × patch cell. Clips that cannot be read, or have no mask, are left out and named.

    Returns:
        ``[B, N]`` saliency (``N = ⌈frames / tubelet⌉ · (H / patch) · (W / patch)``) and the
        problems, one line each.
    """
    rows, problems = [], []
    for index, record in enumerate(tqdm(manifest.records, desc="masks → token grid", disable=not progress)):
        masks = [e.mask for e in record.entities or [] if e.mask]
        if not masks:
            problems.append(f"{manifest.describe(index)}: no entity masks")
            continue
        try:
            clip = decode_clip(
                manifest.resolve(record.video),
                frames,
                size,
                record.start,
                record.end,
                record.fps or timing.fps,
                timing.window,
            )
            union = torch.stack([transform_masks(load_mask(manifest.resolve(m)), clip, size) for m in masks])
        except ValueError as exc:  # VideoError and MaskError
            problems.append(f"{manifest.describe(index)}: {exc}")
            continue
        rows.append(pool_to_grid(union.amax(dim=0), tubelet, patch).flatten())
    if not rows:
        raise ValueError(f"{manifest.path}: no clip with readable masks")
    return torch.stack(rows), problems
