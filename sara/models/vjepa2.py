"""V-JEPA 2 (`transformers.VJEPA2Model`): the frozen video encoder whose tokens the aligner reads.

A clip ``uint8 [B, T, 3, H, W]`` becomes tokens ``[B, N, D]`` on the grid
``(T / tubelet, H / patch, W / patch)``, time-major then row-major (the order of
``pool_to_grid(...).flatten()``). Preprocessing rescales and normalises with the folder's
mean and std, as the model's video processor does, but keeps the clip at the size the data
layer decoded (rotary positions let V-JEPA 2 read any grid) and leaves out the processor's
resize and centre-crop zoom: the mask targets must cover exactly the pixels the tokens see.

**Rotary positions from the clip's own grid.** `transformers`' ``VJEPA2RopeAttention``
splits token ids into (frame, row, column) with ``config.crop_size // patch_size`` — one
square grid, right only for clips of exactly the checkpoint's crop. The original V-JEPA 2
passes the true patch grid of each input; without it, a 256 × 448 clip on a 384-crop
checkpoint gets a wrong frame, row or column id on 99 % of its tokens. :class:`GridRopeAttention`
is the library's attention with ``get_position_ids`` alone replaced: the encoder swaps it
in after loading (same weights, same everything else) and :func:`token_grid` tells it the
grid for one forward. It refuses to run without a grid, and
``tests/test_models.py`` checks that it matches an independent true-grid reference and
differs from the stock ids off the crop, so a `transformers` release that stops
calling ``get_position_ids`` fails there rather than silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import VJEPA2Config, VJEPA2Model
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2RopeAttention

from sara.models.weights import WeightsError, read_normalisation, seeded, weights_folder, write_normalisation

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
    with seeded(seed):
        model = VJEPA2Model(tiny_config())
    model.save_pretrained(out_dir)
    write_normalisation(out_dir, MEAN, STD)
    return out_dir


class GridRopeAttention(VJEPA2RopeAttention):
    """``VJEPA2RopeAttention`` whose rotary (frame, row, column) ids come from ``grid``."""

    grid: tuple[int, int, int] | None = None  # (T', H', W') of the clip being encoded; set by token_grid

    def get_position_ids(self, x: torch.Tensor, masks: torch.Tensor | None = None):
        if self.grid is None:
            raise RuntimeError("V-JEPA 2 attention: no token grid set (encode through VideoEncoder)")
        frames, height, width = self.grid
        if x.shape[1] != frames * height * width and masks is None:
            raise RuntimeError(f"V-JEPA 2 attention: {x.shape[1]} tokens do not fill the grid {self.grid}")
        if masks is not None:  # ids of the kept tokens, per sample and head, as the library passes them
            ids = masks.unsqueeze(1).repeat(1, self.num_attention_heads, 1)
        else:
            ids = torch.arange(x.shape[1], device=x.device)
        per_frame = height * width
        return ids // per_frame, (ids % per_frame) // width, ids % width


def use_true_grid(model: VJEPA2Model) -> list[GridRopeAttention]:
    """Swap every encoder attention of ``model`` for :class:`GridRopeAttention` (in place)."""
    swapped = []
    for number, layer in enumerate(model.encoder.layer):
        attention = layer.attention
        if type(attention) is not VJEPA2RopeAttention:
            raise WeightsError(
                f"V-JEPA 2 layer {number}: attention is {type(attention).__name__}, not the VJEPA2RopeAttention "
                "whose position ids sara replaces (transformers changed: see sara/models/vjepa2.py)"
            )
        attention.__class__ = GridRopeAttention
        swapped.append(attention)
    return swapped


@contextmanager
def token_grid(attentions: list[GridRopeAttention], grid: tuple[int, int, int]) -> Iterator[None]:
    """Give ``attentions`` the token grid of the clip encoded inside the block."""
    for attention in attentions:
        attention.grid = grid
    try:
        yield
    finally:
        for attention in attentions:
            attention.grid = None


class VideoEncoder(torch.nn.Module):
    """Frozen V-JEPA 2 encoder (predictor skipped) with its preprocessing and true-grid positions."""

    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.float32):
        super().__init__()
        folder = weights_folder(folder, "V-JEPA 2")
        self.folder = Path(folder)
        self.model = VJEPA2Model.from_pretrained(folder, dtype=dtype).eval().requires_grad_(False)
        self.attentions = use_true_grid(self.model)
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

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of a clip of ``frames`` frames of ``height × width`` pixels."""
        if frames % self.tubelet or height % self.patch or width % self.patch:
            raise ValueError(
                f"grid: {frames} frames of {height}×{width} do not tile into tubelets of {self.tubelet} "
                f"and patches of {self.patch}"
            )
        return frames // self.tubelet, height // self.patch, width // self.patch

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, T, 3, H, W]`` → tokens ``[B, N, D]``, N = T/tubelet · H/patch · W/patch."""
        grid = self.grid(frames.shape[1], *frames.shape[3:])
        x = (frames.to(self.mean.device).float() / 255.0 - self.mean) / self.std  # (B, T, 3, H, W)
        dtype = next(self.model.parameters()).dtype
        with token_grid(self.attentions, grid):
            out = self.model(pixel_values_videos=x.to(dtype), skip_predictor=True)
        return out.last_hidden_state.float()
