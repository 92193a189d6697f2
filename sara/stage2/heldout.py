"""The held-out validation loss: the flow and alignment terms of a fixed batch of held-out
clips, with fixed noise and σ, every ``validation.loss_every`` steps.

The held-out clips (``validation.heldout``) are precomputed beside the training cache
(``CACHE/heldout``), or encoded once at the start of an online run. The batch is the first
``validation.loss_clips`` clips of the first clip's shape; its noise and σ are drawn once
from a stream no training step uses, for each trained expert within that expert's σ range
(a two-expert model reports the mean over its experts). So the figures of two steps differ
only by the weights: a curve of generalisation, beside the training terms.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sara.config.stage2 import Stage2Config
from sara.parallel.precision import autocast, param_dtype
from sara.parallel.world import World
from sara.stage2.build import Stage2Setup
from sara.stage2.cache import heldout_config
from sara.stage2.clips import CachedClips, OnlineClips
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import reduce_terms
from sara.stage2.step import local_rows, noise_generator

NOISE_STREAM = -1  # the noise generator's "step" of the held-out batch: no training step has it


class HeldoutLoss:
    """Call it to get ``{"val_loss", "val_flow", "val_align"}`` of the fixed held-out batch
    (a collective: every rank calls it)."""

    def __init__(self, config: Stage2Config, setup: Stage2Setup, model: Stage2Model, world: World):
        held = heldout_config(config)
        clips = OnlineClips(held, setup, world.device) if config.online else CachedClips(held)
        shapes = clips.bucket_of
        rows = [i for i, shape in enumerate(shapes) if shape == shapes[0]][: config.validation.loss_clips]
        local = local_rows(len(rows), world, "validation.loss_clips")  # refused at start-up when it does not split
        batch = clips.batch(rows[local], world.device)
        total = (len(rows), *batch["latents"].shape[1:])
        generator = noise_generator(config.seed, NOISE_STREAM)
        self.batches = []
        for name in model.experts:
            drawn = model.draw(total, generator, name)
            self.batches.append(batch | {k: v[local].to(world.device) for k, v in drawn.items()})
        self.model, self.world, self.weight = model, world, config.objective.align.weight
        self.compute = param_dtype(config.parallel, world.device)

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        self.model.eval()
        try:
            terms: list[dict[str, Tensor]] = []
            for batch in self.batches:
                with autocast(self.compute, batch["latents"].device):
                    terms.append(reduce_terms(self.model(batch, align_share=self.world.cp_share)[1], self.world))
        finally:
            self.model.train()
        flow = sum(t["flow"].item() for t in terms) / len(terms)
        align = sum(t["align"].item() for t in terms) / len(terms)
        return {"val_loss": flow + self.weight * align, "val_flow": flow, "val_align": align}
