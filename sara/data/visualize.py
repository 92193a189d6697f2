"""Frame strips with mask overlays, for reports and data checks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OVERLAY = [(255, 0, 0), (0, 255, 0), (0, 120, 255), (255, 0, 255), (255, 255, 0), (0, 255, 255)]


def overlay(frames: torch.Tensor, masks: list[torch.Tensor], alpha: float = 0.5) -> np.ndarray:
    """Tint each entity's mask on the frames: ``uint8 [T, C, H, W]`` + ``[T, H, W]`` masks in
    [0, 1] -> ``uint8 [T, H, W, 3]``."""
    image = frames.permute(0, 2, 3, 1).float()  # (T, H, W, 3)
    for index, mask in enumerate(masks):
        colour = torch.tensor(OVERLAY[index % len(OVERLAY)], dtype=torch.float32)
        weight = alpha * mask.float().unsqueeze(-1)  # (T, H, W, 1)
        image = image * (1 - weight) + colour * weight
    return image.round().clamp(0, 255).to(torch.uint8).numpy()


def spotlight(frames: torch.Tensor, mask: torch.Tensor | None, dim: float = 0.3) -> np.ndarray:
    """Frames with everything outside ``mask`` ``[T, H, W]`` darkened to ``dim`` (colours inside
    stay true, which a tint would not keep) -> ``uint8 [T, H, W, 3]``; plain frames without a mask."""
    image = frames.permute(0, 2, 3, 1).float()  # (T, H, W, 3)
    if mask is not None:
        image = image * (dim + (1 - dim) * mask.float().unsqueeze(-1))
    return image.round().clamp(0, 255).to(torch.uint8).numpy()


def strip(images: np.ndarray, count: int = 8, gap: int = 2) -> np.ndarray:
    """``count`` evenly spaced frames of ``[T, H, W, 3]`` side by side."""
    picks = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    height, width = images.shape[1:3]
    canvas = np.full((height, len(picks) * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for slot, index in enumerate(picks):
        canvas[:, slot * (width + gap) : slot * (width + gap) + width] = images[index]
    return canvas


def slug(text: str, length: int = 48) -> str:
    """A file-name stem for a prompt: lower-case words joined by dashes, at most ``length`` characters."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length] or "prompt"


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``uint8 [H, W, 3]`` image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def grid_to_pixels(values: torch.Tensor, tubelet: int, patch: int, frames: int) -> torch.Tensor:
    """Token-grid values ``[T', H', W', ...]`` onto the pixels they cover: ``[T, H'·patch, W'·patch, ...]``
    (each token fills its tubelet × patch × patch cell; ``T`` may cut the last tubelet short)."""
    pixels = values.repeat_interleave(tubelet, 0).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return pixels[:frames]


def heatmap(frames: torch.Tensor, values: torch.Tensor, alpha: float = 0.6, cmap: str = "magma") -> np.ndarray:
    """``values`` ``[T, H, W]`` in [0, 1] as a colour map blended over ``uint8 [T, C, H, W]`` frames
    -> ``uint8 [T, H, W, 3]``."""
    from matplotlib import colormaps

    colours = colormaps[cmap](values.clamp(0, 1).numpy())[..., :3] * 255  # (T, H, W, 3)
    image = frames.permute(0, 2, 3, 1).float().numpy()
    return np.round((1 - alpha) * image + alpha * colours).clip(0, 255).astype(np.uint8)


def titled(image: np.ndarray, title: str, height: int = 14) -> np.ndarray:
    """``uint8 [H, W, 3]`` with a white bar of ``height`` pixels on top holding ``title``."""
    from PIL import ImageDraw

    bar = Image.new("RGB", (image.shape[1], height), "white")
    ImageDraw.Draw(bar).text((2, 1), title, fill="black")
    return np.concatenate([np.asarray(bar), image])
