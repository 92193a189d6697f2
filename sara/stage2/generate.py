"""`sara stage2 generate`: text-to-video with `WanPipeline` and the trained transformer(s)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

from sara.data.video import write_gif, write_video
from sara.device import pick_device

SCHEDULERS = ("unipc", "euler")


def load_pipeline(folder: str | Path, scheduler: str, shift: float, device: torch.device) -> WanPipeline:
    """A Diffusers-format Wan folder (e.g. ``RUN_DIR/pipeline``) with the chosen sampler."""
    if not (Path(folder) / "model_index.json").is_file():
        raise ValueError(f"{folder}: no model_index.json (expected RUN_DIR/pipeline or a Diffusers Wan folder)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)  # Wan decodes in fp32
    pipe = WanPipeline.from_pretrained(folder, vae=vae, dtype=dtype)
    if scheduler == "unipc":
        pipe.scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, num_train_timesteps=1000
        )
    elif scheduler == "euler":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=1000)
    else:
        raise ValueError(f"--scheduler: {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    return pipe.to(device)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "prompt"


def generate(
    folder: str | Path,
    prompts: list[str],
    out: str | Path,
    negative_prompt: str = "",
    guidance_scale: float = 5.0,
    steps: int = 30,
    scheduler: str = "unipc",
    shift: float = 3.0,
    seed: int = 0,
    frames: int = 17,
    height: int = 128,
    width: int = 128,
    fps: float = 16.0,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """One video per prompt (seed ``seed + i``), as ``NN-<prompt>.mp4`` and ``.gif``; returns the mp4 paths."""
    target = pick_device(device)
    pipe = load_pipeline(folder, scheduler, shift, target)
    pipe.set_progress_bar_config(disable=not progress)
    written = []
    for number, prompt in enumerate(prompts):
        video = pipe(
            prompt=prompt,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed + number),
            output_type="np",
        ).frames[0]  # (T, H, W, 3) floats in [0, 1]
        array = (torch.from_numpy(video) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 3, 1, 2)
        stem = Path(out) / f"{number:02d}-{_slug(prompt)}"
        written.append(write_video(stem.with_suffix(".mp4"), array, fps))
        write_gif(stem.with_suffix(".gif"), array, fps)
    return written
