"""Wan2.2 from `diffusers`: the DiT (`WanTransformer3DModel`), its VAE (`AutoencoderKLWan`)
and umT5 text encoder, kept as one Diffusers-format folder — the layout `WanPipeline`
reads and writes, so trained weights load straight into generation.

A folder describes its own variant in ``model_index.json``:

- ``transformer_2`` present: two experts (Wan2.2 T2V-A14B). ``transformer`` denoises high
  noise, ``transformer_2`` low noise; a timestep ``t >= boundary_ratio · 1000`` belongs to
  the first.
- ``expand_timesteps``: one timestep per token (Wan2.2 TI2V-5B, with its 48-channel VAE of
  16× spatial compression).

Tiny presets write such folders with seeded weights: ``tiny`` (one expert, 16-channel
Wan2.1-style VAE), ``tiny-a14b`` (two experts), ``tiny-ti2v`` (per-token timesteps,
48-channel residual VAE with 2×2 pixel patches, as the 5B model), and ``medium`` / ``wide`` /
``fine`` / ``small`` (one expert, wider, deeper or finer-grained DiTs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from safetensors import safe_open
from transformers import UMT5EncoderModel

from sara.models.text import tiny_umt5_config
from sara.models.tokenizer import tiny_tokenizer
from sara.models.weights import WeightsError, seeded

HIGH, LOW = "high", "low"  # the experts of a two-expert model, by the noise they own
SUBFOLDER = {HIGH: "transformer", LOW: "transformer_2"}  # where each expert lives in a Wan folder


@dataclass(frozen=True)
class TinyWan:
    experts: int  # 1, or 2 (transformer for high noise, transformer_2 for low)
    expand_timesteps: bool  # one timestep per token (TI2V-5B)
    z_dim: int  # latent channels
    residual_vae: bool  # Wan2.2 VAE: residual blocks and 2×2 pixel patches (16× spatial)
    layers: int = 2  # DiT blocks
    heads: int = 4  # attention heads: the DiT width is heads·head_dim
    head_dim: int = 16
    patch: int = 2  # the DiT's spatial patch (Wan: 2; 1: a token per latent pixel)


TINY_WAN = {
    "tiny": TinyWan(experts=1, expand_timesteps=False, z_dim=16, residual_vae=False),
    "tiny-a14b": TinyWan(experts=2, expand_timesteps=False, z_dim=16, residual_vae=False),
    "tiny-ti2v": TinyWan(experts=1, expand_timesteps=True, z_dim=48, residual_vae=True),
    # between the two (0.96 M parameters): the shapes preset's DiT, the smallest that learns the
    # shapes world's colours and layouts within minutes of CPU training (the tiny one does not).
    # Two heads of 64, not eight of 16: Wan's RoPE gives each spatial axis head_dim // 6
    # frequencies, and 16-channel heads leave two (1 and 0.01 rad per token), too few to tell
    # the 8 × 8 token grid's positions apart; at 64 ten (held-out flow loss 0.529 against 0.614
    # after the demo's 800 steps)
    "medium": TinyWan(experts=1, expand_timesteps=False, z_dim=16, residual_vae=False, layers=4, heads=2, head_dim=64),
    # the medium DiT with six blocks of four heads (5.3 M parameters): the shapes-wide preset's.
    # It learns more per step (held-out flow loss 0.476 against 0.534 after 1000 steps on the
    # demo's cache) at 3.3 times the step cost on a CPU: for runs where steps, not seconds, are
    # scarce (a GPU)
    "wide": TinyWan(experts=1, expand_timesteps=False, z_dim=16, residual_vae=False, layers=6, heads=4, head_dim=64),
    # the medium DiT on a token per latent pixel (patch 1 × 1, four times the tokens): the
    # shapes-fine preset's. On a 96² clip a shape of 15 % of the frame spans 2.3 tokens of 16
    # pixels at patch 2, 4.6 of 8 at patch 1
    "fine": TinyWan(
        experts=1, expand_timesteps=False, z_dim=16, residual_vae=False, layers=4, heads=2, head_dim=64, patch=1
    ),
    # a wider, deeper DiT (12 M parameters) for benchmarks: how the alignment's cost compares as the DiT grows
    "small": TinyWan(experts=1, expand_timesteps=False, z_dim=16, residual_vae=False, layers=6, heads=24),
}
BOUNDARY_RATIO = 0.875  # Wan2.2 T2V-A14B: t >= 875 is high noise
FLOW_SHIFT = 3.0  # the sampling shift Wan uses at 480p


def tiny_transformer(
    z_dim: int, text_dim: int, layers: int = 2, heads: int = 4, head_dim: int = 16, patch: int = 2
) -> WanTransformer3DModel:
    """``layers`` blocks of ``heads`` heads of ``head_dim`` channels on ``patch × patch`` latent
    pixels a token (default: width 64, trains in seconds on a CPU)."""
    return WanTransformer3DModel(
        patch_size=(1, patch, patch),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=2 * head_dim * heads,
        num_layers=layers,
        rope_max_seq_len=64,
    )


def tiny_vae(z_dim: int, residual: bool, patches: bool | None = None, base_dim: int = 8) -> AutoencoderKLWan:
    """A narrow causal VAE with Wan's compression: 4× in time, 8× (or 16× with 2×2 pixel
    patches) in space. ``residual``: Wan2.2's residual blocks; ``patches`` (default: as
    ``residual``, as Wan2.2's VAE has both): RGB in 2×2 pixel patches."""
    patches = residual if patches is None else patches
    return AutoencoderKLWan(
        base_dim=base_dim,
        z_dim=z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
        is_residual=residual,
        in_channels=12 if patches else 3,
        out_channels=12 if patches else 3,
        patch_size=2 if patches else None,
        scale_factor_spatial=16 if patches else 8,
    )


def save_tiny_wan(out_dir: str | Path, seed: int = 0, variant: str = "tiny") -> Path:
    """Write a tiny Wan folder in Diffusers format (``WanPipeline.save_pretrained``)."""
    if variant not in TINY_WAN:
        raise ValueError(f"no tiny Wan variant {variant!r}; choose one of {', '.join(TINY_WAN)}")
    spec = TINY_WAN[variant]
    tokenizer = tiny_tokenizer("t5")
    with seeded(seed):
        text_encoder = UMT5EncoderModel(tiny_umt5_config(tokenizer))
        width = text_encoder.config.d_model
        experts = [
            tiny_transformer(spec.z_dim, width, spec.layers, spec.heads, spec.head_dim, spec.patch)
            for _ in range(spec.experts)
        ]
        vae = tiny_vae(spec.z_dim, spec.residual_vae)
    pipeline = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT, num_train_timesteps=1000
        ),
        transformer=experts[0],
        transformer_2=experts[1] if spec.experts == 2 else None,
        boundary_ratio=BOUNDARY_RATIO if spec.experts == 2 else None,
        expand_timesteps=spec.expand_timesteps,
    )
    pipeline.save_pretrained(out_dir)
    return Path(out_dir)


@dataclass(frozen=True)
class WanLayout:
    """What a Diffusers-format Wan folder holds."""

    folder: Path
    experts: tuple[str, ...]  # ("high",) or ("high", "low")
    boundary: float | None  # boundary timestep between the experts (t >= boundary: high)
    expand_timesteps: bool
    vae_temporal: int = 4  # video frames per latent frame (after the first)
    vae_spatial: int = 8  # pixels per latent side
    patch: tuple[int, int, int] = (1, 2, 2)  # the DiT's (frames, rows, columns) of latents per token

    @property
    def pixel_multiple(self) -> tuple[int, int]:
        """What a frame's height and width must be multiples of: pixels per DiT token side
        (VAE factor × patch: TI2V-5B 16 × 2 = 32, A14B 8 × 2 = 16)."""
        return self.vae_spatial * self.patch[1], self.vae_spatial * self.patch[2]

    def expert_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Index into ``experts`` of each timestep ``[B]``: 0 (high noise) or 1 (low noise)."""
        if self.boundary is None:
            return torch.zeros_like(timesteps, dtype=torch.long)
        return (timesteps < self.boundary).long()


def latent_shape(frames: int, height: int, width: int, temporal: int, spatial: int) -> tuple[int, int, int]:
    """Latent ``(F, h, w)`` of a ``4k + 1``-frame clip under a VAE of these compressions."""
    return (frames - 1) // temporal + 1, height // spatial, width // spatial


def dit_grid(patch_size: tuple[int, int, int], latent: tuple[int, int, int]) -> tuple[int, int, int]:
    """The DiT's token grid over latents ``(F, h, w)``: one token per patch."""
    return tuple(side // patch for side, patch in zip(latent, patch_size, strict=True))


def read_layout(folder: str | Path) -> WanLayout:
    """The variant a Wan folder declares in ``model_index.json``.

    Raises:
        WeightsError: the folder is not a Diffusers-format Wan pipeline.
    """
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise WeightsError(f"{folder}: no model_index.json (expected a Diffusers-format Wan folder)")
    spec = json.loads(index.read_text())
    if spec.get("_class_name") != "WanPipeline" or not spec.get("transformer", [None])[0]:
        raise WeightsError(f"{index}: not a WanPipeline with a transformer")
    two = bool(spec.get("transformer_2") and spec["transformer_2"][0])
    ratio = spec.get("boundary_ratio")
    if two and ratio is None:
        raise WeightsError(f"{index}: boundary_ratio: needed with transformer_2")
    vae = json.loads((folder / "vae" / "config.json").read_text()) if (folder / "vae" / "config.json").is_file() else {}
    transformer = json.loads((folder / SUBFOLDER[HIGH] / "config.json").read_text())
    return WanLayout(
        folder=folder,
        experts=(HIGH, LOW) if two else (HIGH,),
        boundary=ratio * 1000 if two else None,
        expand_timesteps=bool(spec.get("expand_timesteps")),
        vae_temporal=vae.get("scale_factor_temporal") or 4,
        vae_spatial=vae.get("scale_factor_spatial") or 8,
        patch=tuple(transformer["patch_size"]),
    )


def load_transformers(
    layout: WanLayout, dtype: torch.dtype = torch.float32, names: tuple[str, ...] | None = None
) -> dict[str, WanTransformer3DModel]:
    """The DiT expert(s) of a folder (``names``, default all), by the noise they own."""
    return {
        name: WanTransformer3DModel.from_pretrained(layout.folder, subfolder=SUBFOLDER[name], dtype=dtype)
        for name in layout.experts
        if names is None or name in names
    }


def _headers(folder: str | Path, subfolder: str) -> Iterator[tuple[str, str, list[int]]]:
    """``(name, safetensors dtype, shape)`` of every tensor of a folder's component, from the
    file headers alone (a config-only folder has none)."""
    for file in sorted((Path(folder) / subfolder).glob("*.safetensors")):
        with safe_open(file, "pt") as tensors:
            for name in tensors.keys():
                piece = tensors.get_slice(name)
                yield name, piece.get_dtype(), piece.get_shape()


def dit_parameters(folder: str | Path) -> int:
    """Parameters of a Wan folder's (first) DiT, read from its safetensors headers, not loaded."""
    return sum(math.prod(shape) for _, _, shape in _headers(folder, "transformer"))


# safetensors' dtype names -> torch's
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip


def stored_dtypes(folder: str | Path, subfolder: str) -> dict[str, torch.dtype]:
    """The dtype each tensor of a folder's component is stored in: what a release ships
    (Wan2.2: bf16, diffusers' fp32 modules aside) and what an export writes back."""
    return {name: SAFETENSORS_DTYPES[dtype] for name, dtype, _ in _headers(folder, subfolder)}


def released_dtype(folder: str | Path, subfolder: str) -> torch.dtype:
    """The dtype most of a component's parameters are stored in (fp32 for a folder without weights)."""
    counts: dict[torch.dtype, int] = {}
    for _, dtype, shape in _headers(folder, subfolder):
        counts[SAFETENSORS_DTYPES[dtype]] = counts.get(SAFETENSORS_DTYPES[dtype], 0) + math.prod(shape)
    return max(counts, key=counts.get) if counts else torch.float32


def keeps_fp32(model: torch.nn.Module, name: str) -> bool:
    """Whether diffusers keeps parameter ``name`` of ``model`` in fp32 whatever dtype the
    model loads in (its ``_keep_in_fp32_modules``; the Wan DiT's time embedder, modulation
    tables and norms), by diffusers' own rule: a listed name is one of the dotted parts."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    return any(part in keep for part in name.split("."))


def load_vae(folder: str | Path, dtype: torch.dtype = torch.float32) -> AutoencoderKLWan:
    return AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=dtype).eval().requires_grad_(False)


def vae_memory(vae: AutoencoderKLWan, tile: int, slicing: bool = False) -> AutoencoderKLWan:
    """Diffusers' memory savers of the VAE: ``tile`` > 0 encodes and decodes in tiles of that
    many pixels overlapping by a quarter (blended: close to, not equal to, whole frames);
    ``slicing`` runs a batch's videos one at a time (equal results up to rounding)."""
    if tile:
        vae.enable_tiling(tile, tile, tile * 3 // 4, tile * 3 // 4)
    if slicing:
        vae.enable_slicing()
    return vae
