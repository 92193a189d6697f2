"""Validation videos from the live expert(s) while Stage 2 trains."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanPipeline

from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.data.manifest import load_manifest
from sara.models.presets import require_weights
from sara.models.wan import SUBFOLDER
from sara.parallel.precision import param_dtype
from sara.parallel.world import World
from sara.stage2.build import Stage2Setup
from sara.stage2.generate import numbered, render, resolve_sampling, set_scheduler
from sara.stage2.objective import Stage2Model


def validation_sampling(config: Stage2Config, setup: Stage2Setup) -> Sampling:
    """How validation samples: the clips' length, the first bucket's size and ``data.fps``;
    ``validation``'s steps and guidance; the rest (shift, negative prompt, the guidance it
    leaves unset) as ``sara stage2 generate`` resolves it for the folder."""
    validation, shape = config.validation, setup.buckets[0]
    sampling = Sampling(
        guidance_scale=validation.guidance_scale,
        guidance_scale_2=validation.guidance_scale_2,
        steps=validation.steps,
        seed=config.seed,
        frames=config.data.frames,
        height=shape.height,
        width=shape.width,
        fps=config.data.fps,
        text_length=config.models.text_length,
    )
    return resolve_sampling(sampling, setup.layout.folder)


class Validator:
    """Videos of the validation prompts, sampled with `WanPipeline` around the live experts;
    the frozen parts of the pipeline are loaded once, in the compute dtype (the VAE in fp32,
    as Wan decodes). With ``validation.offload_frozen`` an expert that does not train (A14B
    training one expert) stays in CPU memory, its blocks brought to the GPU one at a time as
    they run (diffusers' group offloading). Every rank samples (a sharded expert runs on all
    of them together); rank 0 writes."""

    def __init__(self, config: Stage2Config, setup: Stage2Setup, model: Stage2Model, world: World):
        validation = config.validation
        self.model, self.world = model, world
        self.compute = param_dtype(config.parallel, world.device)
        self.prompts = validation.prompts or [r.prompt() for r in load_manifest(config.data.train).records[:2]]
        folder = require_weights(setup.layout.folder, "models.wan")
        live = {SUBFOLDER[name]: dit for name, dit in model.experts.items()}  # used as they are, never cast
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
        self.pipe = WanPipeline.from_pretrained(folder, vae=vae, dtype=self.compute, **live)
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
        self.sampling = validation_sampling(config, setup)
        set_scheduler(self.pipe, self.sampling.scheduler, self.sampling.shift)

    @torch.no_grad()
    def __call__(self, out: Path) -> list[Path]:
        self.model.eval()
        try:
            jobs = numbered(self.prompts, out, self.sampling.seed)
            return render(self.pipe, jobs, self.sampling, False, self.world.is_main, compute=self.compute)
        finally:
            self.model.train()
