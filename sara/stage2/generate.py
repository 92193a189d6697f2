"""`sara stage2 generate`: text-to-video with `WanPipeline` and the trained transformer(s)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

from sara.config.parallel import ParallelConfig
from sara.config.sampling import FALLBACK, SCHEDULERS, Sampling
from sara.data.video import write_gif, write_video
from sara.data.visualize import slug
from sara.models.presets import require_weights
from sara.models.wan import dit_grid, latent_shape, vae_memory
from sara.models.wan_family import family_of, folder_shift
from sara.parallel.context import apply_ulysses, check_tokens
from sara.parallel.precision import autocast
from sara.parallel.world import close_world, init_world
from sara.stage2.encoders import warn_overlong


def resolve_sampling(sampling: Sampling, folder: str | Path) -> Sampling:
    """``sampling`` with every setting it leaves ``None`` filled: from the official settings
    of the release ``folder`` holds (``sara.models.wan_family``), else from the folder (its
    scheduler's shift), else from :data:`FALLBACK`."""
    family = family_of(folder)
    if family is not None:
        found = {
            "negative_prompt": family.negative_prompt, "guidance_scale": family.guidance,
            "guidance_scale_2": family.guidance_2, "steps": family.steps, "frames": family.frames,
            "height": family.height, "width": family.width, "fps": family.fps, "shift": family.shift,
        }  # fmt: skip
    else:
        shift = folder_shift(folder)
        found = {} if shift is None else {"shift": shift}
    unset = [field.name for field in fields(Sampling) if getattr(sampling, field.name) is None]
    return replace(sampling, **{name: found[name] if name in found else getattr(FALLBACK, name) for name in unset})


def set_scheduler(pipe: WanPipeline, scheduler: str, shift: float) -> WanPipeline:
    """``pipe`` sampling with ``scheduler`` at flow ``shift`` (the same for generation and validation)."""
    if scheduler == "unipc":
        pipe.scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, num_train_timesteps=1000
        )
    elif scheduler == "euler":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=1000)
    else:
        raise ValueError(f"--scheduler: {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    return pipe


def load_pipeline(folder: str | Path, sampling: Sampling, device: torch.device) -> WanPipeline:
    """A Diffusers-format Wan folder (e.g. ``RUN_DIR/pipeline``) with the sampler of
    ``sampling`` (resolved), its DiT(s) and text encoder in the compute dtype (bf16 on CUDA)
    and its VAE in fp32, as Wan decodes; ``sampling.vae_tile`` > 0 decodes in tiles."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"{folder}: no model_index.json (expected RUN_DIR/pipeline or a Diffusers Wan folder)")
    require_weights(folder, "--pipeline")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
    vae_memory(vae, sampling.vae_tile)
    pipe = WanPipeline.from_pretrained(folder, vae=vae, dtype=dtype)
    return set_scheduler(pipe, sampling.scheduler, sampling.shift).to(device)


@dataclass(frozen=True)
class Job:
    """One video to sample: its prompt, its seed, and its path without suffix."""

    prompt: str
    seed: int
    stem: Path


def numbered(prompts: list[str], out: str | Path, seed: int) -> list[Job]:
    """Prompt ``i`` as ``out/NN-<prompt>`` with seed ``seed + i``."""
    return [Job(p, seed + i, Path(out) / f"{i:02d}-{slug(p)}") for i, p in enumerate(prompts)]


def render(
    pipe: WanPipeline,
    jobs: list[Job],
    sampling: Sampling,
    progress: bool = True,
    write: bool = True,
    gif: bool = True,
    compute: torch.dtype = torch.float32,
) -> list[Path]:
    """Sample each job's video into ``STEM.mp4`` (and ``STEM.gif``), ``sampling.batch`` jobs per
    pipeline call; returns the mp4 paths.
    ``write=False``: sample only (ranks that share a video with the one that writes it).
    ``compute``: the DiT denoises under autocast in this dtype (experts that keep fp32 masters
    while training); the VAE decodes in its own dtype, outside it."""
    if sampling.batch < 1:
        raise ValueError(f"--batch: {sampling.batch}; sample at least one video a call")
    pipe.set_progress_bar_config(disable=not progress)
    # the low-noise expert's guidance, only for a two-expert pipeline (diffusers refuses it otherwise)
    second = {"guidance_scale_2": sampling.guidance_scale_2} if pipe.config.boundary_ratio is not None else {}
    written = []
    for start in range(0, len(jobs), sampling.batch):
        batch = jobs[start : start + sampling.batch]
        with autocast(compute, pipe.vae.device):
            latents = pipe(
                prompt=[job.prompt for job in batch],
                negative_prompt=[sampling.negative_prompt] * len(batch),
                height=sampling.height,
                width=sampling.width,
                num_frames=sampling.frames,
                num_inference_steps=sampling.steps,
                guidance_scale=sampling.guidance_scale,
                **second,
                # one generator per video: its noise is the noise it gets sampled alone
                generator=[torch.Generator().manual_seed(job.seed) for job in batch],
                max_sequence_length=sampling.text_length,
                output_type="latent",
            ).frames
        videos = _decode(pipe, latents)  # (B, T, 3, H, W) uint8
        if not write:
            continue
        for job, array in zip(batch, videos, strict=True):
            written.append(write_video(job.stem.with_name(job.stem.name + ".mp4"), array, sampling.fps))
            if gif:
                write_gif(job.stem.with_name(job.stem.name + ".gif"), array, sampling.fps)
    return written


@torch.no_grad()
def _decode(pipe: WanPipeline, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents ``[B, C, F, h, w]`` as ``uint8 [B, T, 3, H, W]``: what ``WanPipeline``
    does after denoising (un-normalise, decode, post-process)."""
    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)  # diffusers' own order of ops
    video = vae.decode(latents / inverse_std + mean, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")  # (B, T, H, W, 3) in [0, 1]
    return (torch.from_numpy(frames) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 4, 2, 3)


def generate(
    folder: str | Path,
    prompts: list[str],
    out: str | Path,
    sampling: Sampling,
    device: str = "auto",
    progress: bool = True,
    ulysses: int = 1,
    jobs: list[Job] | None = None,
    gif: bool = True,
) -> list[Path]:
    """Videos of ``prompts`` from a Diffusers-format Wan folder (e.g. ``RUN_DIR/pipeline``).

    Under ``torchrun`` the prompts are dealt to the data-parallel ranks (prompt ``i`` to rank
    ``i mod dp``), and with ``ulysses > 1`` each video is sampled sequence-parallel by a group
    of that many ranks, whose first writes it. Each prompt keeps its seed, so the videos are
    those of one process. ``jobs``: these videos instead of ``prompts`` numbered in ``out``
    (``NN-<prompt>``, seed ``sampling.seed + NN``). Returns the paths this process wrote."""
    sampling = resolve_sampling(sampling, folder)
    world = init_world(ParallelConfig(ulysses=ulysses), device)
    try:
        pipe = load_pipeline(folder, sampling, world.device)
        if world.cp > 1:
            for dit in (pipe.transformer, pipe.transformer_2):
                if dit is not None:
                    apply_ulysses(dit, world)
            _check_tokens(pipe, sampling, world.cp)
        jobs = jobs if jobs is not None else numbered(prompts, out, sampling.seed)
        if world.is_main and jobs:
            warn_overlong(pipe.tokenizer, [job.prompt for job in jobs], sampling.text_length, "text_length")
        mine = jobs[world.dp_rank :: world.dp_size]
        return render(pipe, mine, sampling, progress and world.is_main, world.cp_rank == 0, gif=gif)
    finally:
        close_world(world)


def _check_tokens(pipe: WanPipeline, sampling: Sampling, cp: int) -> None:
    """The video's DiT tokens must split over the sequence-parallel group."""
    latent = latent_shape(
        sampling.frames, sampling.height, sampling.width, pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    )
    tokens = math.prod(dit_grid(pipe.transformer.config.patch_size, latent))
    check_tokens(tokens, cp, f"--frames {sampling.frames} --height {sampling.height} --width {sampling.width}")
