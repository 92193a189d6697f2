"""Validation videos from the live expert(s) while Stage 2 trains."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanPipeline

from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.data.manifest import load_manifest
from sara.models.wan import SUBFOLDER
from sara.parallel.world import World
from sara.stage2.build import Stage2Setup
from sara.stage2.generate import numbered, render
from sara.stage2.objective import Stage2Model


class Validator:
    """Videos of the validation prompts, sampled with `WanPipeline` around the live experts;
    the frozen parts of the pipeline are loaded once. With ``validation.offload_frozen`` an
    expert that does not train (A14B training one expert) stays in CPU memory, its blocks
    brought to the GPU one at a time as they run (diffusers' group offloading). Every rank
    samples (a sharded expert runs on all of them together); rank 0 writes."""

    def __init__(self, config: Stage2Config, setup: Stage2Setup, model: Stage2Model, world: World):
        validation, data = config.validation, config.data
        self.model, self.world = model, world
        self.prompts = validation.prompts or [r.prompt() for r in load_manifest(data.train).records[:2]]
        live = {SUBFOLDER[name]: dit for name, dit in model.experts.items()}
        self.pipe = WanPipeline.from_pretrained(setup.layout.folder, **live)
        frozen = {SUBFOLDER[n] for n in setup.layout.experts if n not in model.experts}
        if validation.offload_frozen and frozen:  # the expert that does not train waits in CPU memory
            for name in frozen:
                getattr(self.pipe, name).enable_group_offload(
                    world.device, torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
                )
            for name, part in self.pipe.components.items():
                if isinstance(part, torch.nn.Module) and name not in frozen:
                    part.to(world.device)
        else:
            self.pipe.to(world.device)
        shape = setup.buckets[0]  # validation videos take the first bucket's size
        self.sampling = Sampling(
            guidance_scale=validation.guidance_scale,
            steps=validation.steps,
            seed=config.seed,
            frames=data.frames,
            height=shape.height,
            width=shape.width,
            text_length=config.models.text_length,
        )

    @torch.no_grad()
    def __call__(self, out: Path) -> list[Path]:
        self.model.eval()
        try:
            jobs = numbered(self.prompts, out, self.sampling.seed)
            return render(self.pipe, jobs, self.sampling, progress=False, write=self.world.is_main)
        finally:
            self.model.train()
