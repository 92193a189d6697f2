"""How Stage 2 draws σ: a density of ``u`` in [0, 1], pushed through the flow shift.

The densities are diffusers' (``compute_density_for_timestep_sampling``, the one the SD3
and Flux trainers use): ``uniform``, ``logit_normal`` (``u = sigmoid(N(mean, std))``, most
steps at middle noise) and ``mode`` (``u = 1 − v − scale·(cos²(πv/2) − 1 + v)``, ``v``
uniform, which bends mass toward the middle for ``scale > 0`` and is uniform at 0). The
shift then maps ``u`` to σ as Wan's scheduler does (:func:`sara.losses.flow.shift_sigma`);
with ``shift: 1`` the density alone sets σ.

A two-expert model trains one expert per step (sharded ranks must never run different
experts in one step): the step's first draw picks the expert that owns its σ, and the
batch is drawn from the density restricted to that expert's range, by rejection. Each
sample's σ then follows the unrestricted density, and each expert trains in proportion to
its mass under it, for every density alike.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import compute_density_for_timestep_sampling
from torch import Tensor

from sara.config.stage2 import FlowConfig
from sara.losses.flow import shift_sigma

# rounds of rejection before giving up: 64 rounds of a batch miss a range only if it holds
# well under 1 % of the density — a density that starves an expert is a config error
MAX_ROUNDS = 64


def draw_sigmas(config: FlowConfig, count: int, generator: torch.Generator) -> Tensor:
    """``count`` σ ``[count]`` of the shifted density, on the CPU from ``generator``."""
    u = compute_density_for_timestep_sampling(
        config.density, count, logit_mean=config.logit_mean, logit_std=config.logit_std,
        mode_scale=config.mode_scale, generator=generator,
    )  # fmt: skip
    return shift_sigma(u.clamp(0, 1), config.shift)


def inside(sigma: Tensor, low: float, high: float) -> Tensor:
    """Whether each σ lies in ``[low, high)`` — ``[low, 1]`` for the top range, which owns σ = 1."""
    return (sigma >= low) & ((sigma < high) | (high >= 1.0))


def draw_in_range(config: FlowConfig, count: int, generator: torch.Generator, low: float, high: float) -> Tensor:
    """``count`` σ of the shifted density restricted to ``[low, high)``, by rejection."""
    kept = torch.empty(0)
    for _ in range(MAX_ROUNDS):
        sigma = draw_sigmas(config, count, generator)
        kept = torch.cat([kept, sigma[inside(sigma, low, high)]])
        if len(kept) >= count:
            return kept[:count]
    raise ValueError(
        f"objective.flow: the {config.density} density (shift {config.shift}) puts almost no mass on "
        f"σ in [{low}, {high}]; an expert that trains there would never be fed"
    )
