"""``sara bench vae``: one training step of the shapes VAE (encode, unclamped decode, L1,
backward, AdamW) with Diffusers' layers and with :func:`sara.models.vae_layers.fast_layers`,
on single frames (phase 1 of its recipe) and on short clips (phase 2), as ratios."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from sara.models.shapes_vae import VaeRecipe, decode_unclamped, shapes_vae
from sara.models.vae_layers import fast_layers


def _step_seconds(frames: int, batch: int, crop: int, base_dim: int, fast: bool, warmup: int, steps: int) -> float:
    """Median seconds of one training step on random clips ``[batch, 3, frames, crop, crop]``."""
    torch.manual_seed(0)
    vae = shapes_vae(base_dim).train()
    optimizer = torch.optim.AdamW(vae.parameters(), 1e-4)
    clip = torch.rand(batch, 3, frames, crop, crop) * 2 - 1
    times = []
    with fast_layers(vae) if fast else nullcontext():
        for index in range(warmup + steps):
            start = time.perf_counter()
            error = (decode_unclamped(vae, vae.encode(clip).latent_dist.mode()) - clip).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            error.backward()
            optimizer.step()
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_vae(recipe: VaeRecipe, warmup: int = 2, steps: int = 10) -> list[dict]:
    """Per phase of ``recipe``: seconds per step with each set of layers, and the speed-up."""
    rows = []
    for phase, frames, batch in (("single frames", 1, recipe.image_batch), ("clips", recipe.frames, recipe.clip_batch)):
        diffusers, fast = (
            _step_seconds(frames, batch, recipe.crop, recipe.base_dim, use, warmup, steps) for use in (False, True)
        )
        rows.append({"phase": phase, "frames": frames, "batch": batch, "diffusers_s": diffusers, "fast_s": fast})
    return rows


def format_vae(rows: list[dict]) -> str:
    lines = ["| phase | clips × frames | Diffusers layers | fast_layers | speed-up |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['phase']} | {row['batch']} × {row['frames']} | {row['diffusers_s'] * 1000:.0f} ms "
            f"| {row['fast_s'] * 1000:.0f} ms | {row['diffusers_s'] / row['fast_s']:.2f} × |"
        )
    return "\n".join(lines)
