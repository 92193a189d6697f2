"""V-JEPA 2 (`transformers.VJEPA2Model`): the frozen video encoder whose tokens the aligner reads.

A clip ``uint8 [B, T, 3, H, W]`` becomes tokens ``[B, N, D]`` on the grid
``(T / tubelet, H / patch, W / patch)``, time-major then row-major (the order of
``pool_to_grid(...).flatten()``). Preprocessing rescales and normalises with the folder's
mean and std, as the model's video processor does, but keeps the clip at the size the data
layer decoded (rotary positions let V-JEPA 2 read any grid) and leaves out the processor's
resize and centre-crop zoom: the mask targets must cover exactly the pixels the tokens see.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import VJEPA2Config, VJEPA2Model

from sara.models.weights import read_normalisation, weights_folder, write_normalisation

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # V-JEPA 2's defaults (ImageNet)


def tiny_config() -> VJEPA2Config:
    """Two layers of width 192 on 16 frames of 128×128: an 8×8×8 token grid."""
    return VJEPA2Config(
        patch_size=16,
        crop_size=128,
        frames_per_clip=16,
        tubelet_size=2,
        hidden_size=192,
        num_attention_heads=4,
        num_hidden_layers=2,
        pred_hidden_size=32,
        pred_num_attention_heads=2,
        pred_num_hidden_layers=1,
        num_pooler_layers=1,
    )


def save_tiny(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny V-JEPA 2 folder (config, seeded weights, preprocessor config)."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    VJEPA2Model(tiny_config()).save_pretrained(out_dir)
    write_normalisation(out_dir, MEAN, STD)
    return out_dir


class VideoEncoder(torch.nn.Module):
    """Frozen V-JEPA 2 encoder (predictor skipped) with its preprocessing."""

    def __init__(self, folder: str | Path):
        super().__init__()
        folder = weights_folder(folder, "V-JEPA 2")
        self.model = VJEPA2Model.from_pretrained(folder).eval().requires_grad_(False)
        mean, std = read_normalisation(folder, MEAN, STD)
        self.register_buffer("mean", mean.view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 1, 3, 1, 1), persistent=False)

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def tubelet(self) -> int:
        return self.model.config.tubelet_size

    @property
    def patch(self) -> int:
        return self.model.config.patch_size

    def grid(self, frames: int, size: int) -> tuple[int, int, int]:
        """Token grid of a clip of ``frames`` frames of ``size × size`` pixels."""
        if frames % self.tubelet or size % self.patch:
            raise ValueError(
                f"grid: {frames} frames of {size}×{size} do not tile into tubelets of {self.tubelet} "
                f"and patches of {self.patch}"
            )
        return frames // self.tubelet, size // self.patch, size // self.patch

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, T, 3, H, W]`` → tokens ``[B, N, D]``, N = T/tubelet · H/patch · W/patch."""
        self.grid(frames.shape[1], frames.shape[3])
        x = (frames.to(self.mean.device).float() / 255.0 - self.mean) / self.std  # (B, T, 3, H, W)
        dtype = next(self.model.parameters()).dtype
        return self.model(pixel_values_videos=x.to(dtype), skip_predictor=True).last_hidden_state.float()
