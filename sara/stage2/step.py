"""One Stage 2 optimizer step, the same in one process and on many.

**Batch sizes**, as Wan trainers (diffusers' examples, musubi-tuner, DiffSynth) count
them: ``optim.batch_size`` clips go through the DiT at once on each data-parallel rank (a
micro-batch), ``optim.accumulate`` micro-batches make a step, and the **global batch** of
a step is ``batch_size × accumulate × dp`` — derived, logged at start-up, and the same
for every world that keeps the product (one process with accumulate 4 and four ranks
with accumulate 1 take the same steps).

The global batch of step ``k`` is a function of ``(seed, k)`` alone: its clips are chosen
by ``(seed, k)``, and its noise, σ, expert and caption dropout are drawn for the whole
batch from a generator seeded by ``(seed, k)``. Each data-parallel rank takes its own
rows of it; the ranks of a sequence-parallel group take the same rows. A rank runs its
rows as ``accumulate`` micro-batches, each backward scaled by its share of the rows: every
term is a mean over samples, so the gradient is the one of the whole batch, at the
activation memory of one micro-batch. By default only the last micro-batch reduces the
gradients over the ranks (``parallel.accumulate_sync``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sara.config.stage2 import Stage2Config
from sara.parallel.gradients import backward, clip_grad_norm, set_gradient_sync, sync_replicated
from sara.parallel.precision import autocast, param_dtype
from sara.parallel.world import World
from sara.stage2.clips import drop_captions
from sara.stage2.objective import Stage2Model


def noise_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def global_batch(config: Stage2Config, dp_size: int) -> int:
    """Clips in one optimizer step over the whole run: micro-batch × accumulation × data-parallel ranks."""
    return config.optim.batch_size * config.optim.accumulate * dp_size


def local_rows(batch_size: int, world: World, key: str = "optim.batch_size") -> slice:
    """This rank's rows of a global batch.

    Raises:
        ValueError: naming ``key``, the batch does not split evenly over the data-parallel ranks.
    """
    if batch_size % world.dp_size:
        raise ValueError(f"{key}: {batch_size} clips do not split over {world.dp_size} data-parallel ranks")
    size = batch_size // world.dp_size
    return slice(world.dp_rank * size, (world.dp_rank + 1) * size)


def micro_batches(rows: int, accumulate: int) -> list[Tensor]:
    """This rank's ``rows`` as ``accumulate`` index chunks of equal size.

    Raises:
        ValueError: the rows do not split into ``accumulate`` equal micro-batches.
    """
    if rows % accumulate:
        raise ValueError(f"optim.accumulate: {rows} clips a rank do not split into {accumulate} micro-batches")
    return list(torch.arange(rows).chunk(accumulate))


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
    rank's (``sara.stage2.parallelize.reduce_terms`` makes the step's)."""
    latents = batch["latents"]
    total = len(latents) * world.dp_size
    rows = local_rows(total, world)
    drawn = model.draw((total, *latents.shape[1:]), generator)
    batch = batch | {k: v[rows].to(latents.device) for k, v in drawn.items()}
    if config.data.caption_dropout:  # drawn after the noise: runs without dropout keep their noise
        batch = drop_captions(batch, config.data.caption_dropout, generator, rows, total)
    optimizer.zero_grad(set_to_none=True)
    terms: dict[str, Tensor] = {}
    compute = param_dtype(config.parallel, latents.device)
    chunks = micro_batches(len(latents), config.optim.accumulate)
    for index, chunk in enumerate(chunks):
        share = len(chunk) / len(latents)
        set_gradient_sync(model, index == len(chunks) - 1, config.parallel.accumulate_sync)
        # per-row tensors split; shared ones (the empty caption's states, [1, L, D]) ride along
        part = {k: v[chunk.to(v.device)] if len(v) == len(latents) else v for k, v in batch.items()}
        with autocast(compute, latents.device):
            loss, chunk_terms = model(part, align_share=world.cp_share)
        backward(loss * share, world)
        terms = {k: terms.get(k, 0) + v * share for k, v in chunk_terms.items()}
    trained = [p for p in model.parameters() if p.requires_grad]
    sync_replicated(trained, world)
    grad_norm = clip_grad_norm(trained, config.optim.grad_clip)
    optimizer.step()
    return terms, grad_norm
