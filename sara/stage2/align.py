"""From DiT hidden states to the V-JEPA 2 token grid: the capture, the projector, the resampling.

**Capture.** The training forward of the DiT returns, besides its prediction, the output
``[B, N_dit, D]`` of block ``k``: :func:`capture_output` registers a hook on the block for that
one call and removes it, so sampling and gradient-checkpoint recompute never touch it, and no
state outlives the call. The hook returns nothing, so the DiT's output is untouched (the
tests check bit-identity).

**Projector.** REPA's head: three linear layers with SiLU between, DiT width → VFM width.

**Grids and time.** The DiT sees latent frames of Wan's causal VAE: latent frame 0 encodes
video frame 0 alone, latent frame ``f ≥ 1`` the four frames ``4f−3 … 4f``. DiT tokens lie
on ``(F_lat, H_lat/2, W_lat/2)``. V-JEPA 2 is given the video frames ``1, 1+s, 1+2s, …``
up to ``4k`` of the same ``4k + 1``-frame clip (stride ``s`` = 1 or 2; frame 0 is the one
a tubelet of two cannot pair with), resized so that its short side is ``short_side``
(default: as decoded), and its tokens lie on ``(4k / (2s), h/16, w/16)``. Tubelet ``j``
covers video frames ``1 + 2js`` and ``1 + (2j+1)s``, which lie inside one latent frame,
``f = ⌈(1 + 2js)/4⌉``: with ``s = 1`` tubelets ``2f−2`` and ``2f−1`` both read latent frame
``f``; with ``s = 2`` tubelet ``f−1`` does. Latent frame 0 has no V-JEPA counterpart and is
left out of the alignment. Space is resampled by area averaging (DiT grid finer than
V-JEPA's) or bilinearly (coarser, as with the 16× VAE of Wan2.2 TI2V-5B). A long clip at
full resolution gives V-JEPA far more tokens than TRD needs — 121 frames at 704 × 1280 are
211 k tokens; stride 2 at a short side of 256 gives 30 × 16 × 28 = 13 k.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VJEPA_FIRST_FRAME = 1  # V-JEPA 2 reads video frames 1 … 4k of a 4k+1-frame clip


@contextmanager
def capture_output(module: nn.Module) -> Iterator[list[Tensor]]:
    """The outputs of ``module`` while the block runs, in a list the block owns.

    The hook exists only inside the block: sampling never meets it, and neither does the
    recompute of gradient checkpointing, which happens later, in backward."""
    outputs: list[Tensor] = []
    handle = module.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


class Projector(nn.Module):
    """``[B, N, D_dit] -> [B, N, D_vfm]``: Linear, SiLU, Linear, SiLU, Linear."""

    def __init__(self, dit_dim: int, vfm_dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(dit_dim, vfm_dim)
        self.net = nn.Sequential(
            nn.Linear(dit_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, vfm_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass(frozen=True)
class VfmView:
    """How V-JEPA 2 sees a clip the DiT trains on (see the module docstring)."""

    tubelet: int  # video frames per V-JEPA token
    patch: int  # pixels per V-JEPA token side
    stride: int = 1  # V-JEPA reads every stride-th frame from frame 1
    short_side: int | None = None  # V-JEPA's input short side in pixels; None: the clip's own

    def frame_indices(self, frames: int) -> slice:
        """Which of a ``4k + 1``-frame clip's frames V-JEPA reads."""
        return slice(VJEPA_FIRST_FRAME, frames, self.stride)

    def size(self, height: int, width: int) -> tuple[int, int]:
        """V-JEPA's input size for frames of ``height × width``: the short side scaled to
        ``short_side``, each side rounded to a multiple of the patch."""
        scale = 1.0 if self.short_side is None else self.short_side / min(height, width)
        return tuple(max(self.patch, round(side * scale / self.patch) * self.patch) for side in (height, width))

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """V-JEPA token grid of a ``frames``-frame clip of ``height × width`` pixels."""
        seen = len(range(frames)[self.frame_indices(frames)])
        h, w = self.size(height, width)
        return seen // self.tubelet, h // self.patch, w // self.patch

    def latent_frame_of(self, tubelets: int, temporal_factor: int = 4) -> Tensor:
        """The latent frame each V-JEPA tubelet lies in: ``[T_v]`` indices."""
        first = VJEPA_FIRST_FRAME + self.tubelet * self.stride * torch.arange(tubelets)  # first video frame
        last = first + (self.tubelet - 1) * self.stride
        frames = torch.div(first + temporal_factor - 1, temporal_factor, rounding_mode="floor")  # ⌈first / 4⌉
        if not torch.equal(frames, torch.div(last + temporal_factor - 1, temporal_factor, rounding_mode="floor")):
            raise ValueError(
                f"a tubelet of {self.tubelet} frames at stride {self.stride} straddles latent frames of "
                f"{temporal_factor}"
            )
        return frames


def resample_to_vjepa(
    tokens: Tensor,
    dit_grid: tuple[int, int, int],
    vjepa_grid: tuple[int, int, int],
    view: VfmView,
    temporal_factor: int = 4,
) -> Tensor:
    """DiT-grid tokens ``[B, F·H·W, D]`` onto the V-JEPA grid ``[B, T_v·H_v·W_v, D]``."""
    frames, height, width = dit_grid
    t_v, h_v, w_v = vjepa_grid
    batch, count, dim = tokens.shape
    if count != math.prod(dit_grid):
        raise ValueError(f"DiT tokens: {count} do not fill the grid {dit_grid}")
    video_frames = (frames - 1) * temporal_factor + 1
    expected = len(range(video_frames)[view.frame_indices(video_frames)]) // view.tubelet
    if expected != t_v:
        raise ValueError(
            f"grid mismatch: {frames} latent frames give V-JEPA {expected} tubelets "
            f"(tubelet {view.tubelet}, stride {view.stride}), the V-JEPA grid has {t_v}"
        )
    x = tokens.reshape(batch, frames, height, width, dim)
    x = x[:, view.latent_frame_of(t_v, temporal_factor).to(tokens.device)]  # (B, T_v, H, W, D)
    x = x.permute(0, 1, 4, 2, 3).reshape(batch * t_v, dim, height, width)
    if (h_v, w_v) != (height, width):
        if h_v <= height and w_v <= width:
            x = F.adaptive_avg_pool2d(x, (h_v, w_v))
        else:
            x = F.interpolate(x, size=(h_v, w_v), mode="bilinear", align_corners=False)
    return x.reshape(batch, t_v, dim, h_v, w_v).permute(0, 1, 3, 4, 2).reshape(batch, t_v * h_v * w_v, dim)
