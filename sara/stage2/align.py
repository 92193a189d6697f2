"""From DiT hidden states to the V-JEPA 2 token grid: the hook, the projector, the resampling.

**Hook.** A forward hook on DiT block ``k`` keeps that block's output ``[B, N_dit, D]``
and returns nothing, so the DiT's own output is untouched (the tests check bit-identity).

**Projector.** REPA's head: three linear layers with SiLU between, DiT width → VFM width.

**Grids and time.** The DiT sees latent frames of Wan's causal VAE: latent frame 0 encodes
video frame 0 alone, latent frame ``f ≥ 1`` the four frames ``4f−3 … 4f``. DiT tokens lie
on ``(F_lat, H_lat/2, W_lat/2)``. V-JEPA 2 is given the video frames ``1 … 4k`` of the
same ``4k + 1``-frame clip (frame 0 is the one a tubelet of two cannot pair with), and its
tokens lie on ``(2k, H/16, W/16)`` — tubelet ``j`` covers video frames ``2j+1, 2j+2``.
Every tubelet therefore lies inside exactly one latent frame: ``f = ⌈(2j+1)/4⌉``, i.e. the
tubelets ``2f−2`` and ``2f−1`` both read latent frame ``f``, and latent frame 0 has no
V-JEPA counterpart and is left out of the alignment. Space is resampled by area
averaging (DiT grid finer than V-JEPA's) or bilinearly (coarser, as with the 16× VAE of
Wan2.2 TI2V-5B, whose DiT grid is half V-JEPA's).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VJEPA_FIRST_FRAME = 1  # V-JEPA 2 reads video frames 1 … 4k of a 4k+1-frame clip


class BlockHook:
    """Keeps the output hidden states of ``module`` on each forward, without changing them."""

    def __init__(self, module: nn.Module):
        self.hidden: Tensor | None = None
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self.hidden = output  # returning None leaves the block's output as it is

    def pop(self) -> Tensor:
        """The captured states (once per forward)."""
        if self.hidden is None:
            raise RuntimeError("the hooked block has not run since the last pop")
        hidden, self.hidden = self.hidden, None
        return hidden

    def clear(self) -> None:
        """Forget the states of a forward no loss will read (e.g. sampling)."""
        self.hidden = None

    def remove(self) -> None:
        self._handle.remove()


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


def vjepa_frames(latent_frames: int, temporal_factor: int = 4) -> int:
    """Video frames V-JEPA 2 reads for a clip of ``latent_frames`` latent frames (``4k`` for ``k + 1``)."""
    return (latent_frames - 1) * temporal_factor


def latent_frame_of(tubelets: int, tubelet: int, temporal_factor: int = 4) -> Tensor:
    """The latent frame each V-JEPA tubelet lies in: ``[T_v]`` indices (see the module docstring)."""
    first = VJEPA_FIRST_FRAME + tubelet * torch.arange(tubelets)  # first video frame of each tubelet
    last = first + tubelet - 1
    frames = torch.div(first + temporal_factor - 1, temporal_factor, rounding_mode="floor")  # ⌈first / 4⌉
    if not torch.equal(frames, torch.div(last + temporal_factor - 1, temporal_factor, rounding_mode="floor")):
        raise ValueError(f"a tubelet of {tubelet} frames straddles latent frames of {temporal_factor}")
    return frames


def resample_to_vjepa(
    tokens: Tensor,
    dit_grid: tuple[int, int, int],
    vjepa_grid: tuple[int, int, int],
    tubelet: int,
    temporal_factor: int = 4,
) -> Tensor:
    """DiT-grid tokens ``[B, F·H·W, D]`` onto the V-JEPA grid ``[B, T_v·H_v·W_v, D]``."""
    frames, height, width = dit_grid
    t_v, h_v, w_v = vjepa_grid
    batch, count, dim = tokens.shape
    if count != math.prod(dit_grid):
        raise ValueError(f"DiT tokens: {count} do not fill the grid {dit_grid}")
    if vjepa_frames(frames, temporal_factor) != t_v * tubelet:
        raise ValueError(
            f"grid mismatch: {frames} latent frames cover {vjepa_frames(frames, temporal_factor)} video frames "
            f"after the first, V-JEPA's {t_v} tubelets of {tubelet} cover {t_v * tubelet}"
        )
    x = tokens.reshape(batch, frames, height, width, dim)
    x = x[:, latent_frame_of(t_v, tubelet, temporal_factor).to(tokens.device)]  # (B, T_v, H, W, D)
    x = x.permute(0, 1, 4, 2, 3).reshape(batch * t_v, dim, height, width)
    if (h_v, w_v) != (height, width):
        if h_v <= height and w_v <= width:
            x = F.adaptive_avg_pool2d(x, (h_v, w_v))
        else:
            x = F.interpolate(x, size=(h_v, w_v), mode="bilinear", align_corners=False)
    return x.reshape(batch, t_v, dim, h_v, w_v).permute(0, 1, 3, 4, 2).reshape(batch, t_v * h_v * w_v, dim)
