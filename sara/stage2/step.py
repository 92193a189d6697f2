"""One Stage 2 optimizer step, the same in one process and on many.

The batch of step ``k`` is the same global batch whatever the world: its clips are chosen
by ``(seed, k)``, and its noise, σ, expert and caption dropout are drawn for the whole
batch from a generator seeded by ``(seed, k)``. Each data-parallel rank takes its own
rows of it; the ranks of a sequence-parallel group take the same rows. With
``optim.accumulate = n`` a rank runs its rows as ``n`` micro-batches, each backward scaled
by its share of the rows: every term is a mean over samples, so the gradient is the one
of the whole batch, at the activation memory of one micro-batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sara.config.stage2 import Stage2Config
from sara.parallel.dit import backward
from sara.parallel.world import World
from sara.stage2.clips import drop_captions
from sara.stage2.objective import Stage2Model


def noise_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def local_rows(batch_size: int, world: World) -> slice:
    """This rank's rows of a global batch.

    Raises:
        ValueError: the batch does not split evenly over the data-parallel ranks.
    """
    if batch_size % world.dp_size:
        raise ValueError(f"optim.batch_size: {batch_size} clips do not split over {world.dp_size} data-parallel ranks")
    size = batch_size // world.dp_size
    return slice(world.dp_rank * size, (world.dp_rank + 1) * size)


def micro_batches(rows: int, accumulate: int) -> list[Tensor]:
    """This rank's ``rows`` as ``accumulate`` index chunks (sizes differing by at most one).

    Raises:
        ValueError: fewer rows than micro-batches.
    """
    if accumulate > rows:
        raise ValueError(f"optim.accumulate: {accumulate} micro-batches, but each rank has {rows} clip(s) a step")
    return list(torch.arange(rows).tensor_split(accumulate))


def train_step(
    model: Stage2Model,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    generator: torch.Generator,
    config: Stage2Config,
    world: World,
) -> tuple[dict[str, Tensor], Tensor]:
    """One optimizer step on this rank's ``batch`` (its rows of the global batch) with noise
    (and caption dropout) from ``generator``: ``(terms, grad norm)``; the terms are this
    rank's (``sara.parallel.dit.reduce_terms`` makes the step's)."""
    latents = batch["latents"]
    total = len(latents) * world.dp_size
    rows = local_rows(total, world)
    drawn = model.draw((total, *latents.shape[1:]), generator)
    batch = batch | {k: v[rows].to(latents.device) for k, v in drawn.items()}
    if config.data.caption_dropout:  # drawn after the noise: runs without dropout keep their noise
        batch = drop_captions(batch, config.data.caption_dropout, generator, rows, total)
    optimizer.zero_grad(set_to_none=True)
    terms: dict[str, Tensor] = {}
    for chunk in micro_batches(len(latents), config.optim.accumulate):
        share = len(chunk) / len(latents)
        # per-row tensors split; shared ones (the empty caption's states, [1, L, D]) ride along
        part = {k: v[chunk.to(v.device)] if len(v) == len(latents) else v for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=latents.device.type == "cuda"):
            loss, chunk_terms = model(part)
        backward(loss * share, world)
        terms = {k: terms.get(k, 0) + v * share for k, v in chunk_terms.items()}
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.grad is not None], config.optim.grad_clip
    )
    optimizer.step()
    return terms, grad_norm
