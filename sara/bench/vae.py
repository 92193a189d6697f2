"""``sara bench vae``: one training step of the shapes VAE (:func:`vae_step`: encode,
unclamped decode, weighted L1 + KL, backward, AdamW) with Diffusers' layers and with
:func:`sara.models.vae_layers.fast_layers`, on single frames (phase 1 of its recipe) and on
short clips (its optional phase 2), as ratios."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from sara.models.vae_layers import fast_layers
from sara.shapes.vae import VaeRecipe, shapes_vae, vae_step


def _step_seconds(recipe: VaeRecipe, frames: int, batch: int, fast: bool, warmup: int, steps: int) -> float:
    """Median seconds of the recipe's training step (:func:`vae_step`) on random clips
    ``[batch, 3, frames, crop, crop]``, a random tenth of their pixels on outlines."""
    torch.manual_seed(0)
    vae = shapes_vae(recipe.base_dim).train()
    optimizer = torch.optim.AdamW(vae.parameters(), 1e-4)
    clip = torch.rand(batch, 3, frames, recipe.crop, recipe.crop) * 2 - 1
    weight = 1 + recipe.outline_weight * (torch.rand(batch, 1, frames, recipe.crop, recipe.crop) < 0.1).float()
    times = []
    with fast_layers(vae) if fast else nullcontext():
        for index in range(warmup + steps):
            start = time.perf_counter()
            vae_step(vae, optimizer, clip, weight, recipe.kl_weight)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_vae(recipe: VaeRecipe, warmup: int = 2, steps: int = 10) -> list[dict]:
    """Per phase of ``recipe``: seconds per step with each set of layers, and the speed-up."""
    rows = []
    for phase, frames, batch in (("single frames", 1, recipe.image_batch), ("clips", recipe.frames, recipe.clip_batch)):
        diffusers, fast = (_step_seconds(recipe, frames, batch, use, warmup, steps) for use in (False, True))
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
