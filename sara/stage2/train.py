"""`sara stage2 train`: continual training of the Wan DiT with flow matching + ``λ ·`` alignment.

The step is ``Stage2Model(batch)``: the batch of step ``k`` (clips chosen by ``(seed, k)``)
carries the noise and σ drawn from a generator seeded by ``(seed, k)``, so a resumed run
replays exactly what an uninterrupted one computes. At the end the trained expert(s) are
written with the rest of the Wan folder as a Diffusers-format pipeline (``RUN_DIR/pipeline``)
that `WanPipeline.from_pretrained` and `sara stage2 generate` load.
"""

from __future__ import annotations

import copy
import os
import resource
import shutil
import time
from pathlib import Path

import torch
from diffusers import WanPipeline
from diffusers.training_utils import EMAModel
from peft import LoraConfig
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sara.checkpoint import load_checkpoint, resume_point, save_checkpoint
from sara.config import save_config
from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.data.manifest import load_manifest
from sara.device import pick_device
from sara.models.aligner import parameter_count
from sara.models.presets import wan_folder
from sara.models.wan import SUBFOLDER, WanLayout, load_transformers, read_layout
from sara.stage2.clips import CachedClips, OnlineClips, drop_captions
from sara.stage2.encoders import buckets, teacher
from sara.stage2.generate import render
from sara.stage2.objective import Stage2Model
from sara.training import BucketSteps, load_history, lr_factor, save_history

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections of every Wan block


def build_model(config: Stage2Config, layout: WanLayout) -> Stage2Model:
    """The trainable experts of the folder and their projectors."""
    names = [n for n in layout.experts if len(layout.experts) == 1 or n in config.objective.experts]
    if not names:
        raise ValueError(f"objective.experts: {config.objective.experts} names none of {', '.join(layout.experts)}")
    experts = {n: m for n, m in load_transformers(layout).items() if n in names}
    if config.optim.lora_rank:
        for dit in experts.values():
            dit.requires_grad_(False)  # the adapters alone train; the projectors stay fully trainable
            dit.add_adapter(
                LoraConfig(
                    r=config.optim.lora_rank,
                    lora_alpha=config.optim.lora_alpha or config.optim.lora_rank,
                    target_modules=LORA_TARGETS,
                    init_lora_weights=True,
                )
            )
    model = Stage2Model(experts, layout, config.objective, *teacher(config))
    if config.optim.gradient_checkpointing:
        for dit in model.experts.values():
            dit.enable_gradient_checkpointing()
    return model


def noise_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_step(
    model: Stage2Model,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    config: Stage2Config,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer step on ``batch`` with noise (and caption dropout) from ``generator``:
    ``(loss, terms, grad norm)``."""
    latents = batch["latents"]
    noise, sigma = model.draw(latents, generator)
    batch = batch | {"noise": noise, "sigma": sigma}
    if config.data.caption_dropout:  # drawn after the noise: runs without dropout keep their noise
        batch = drop_captions(batch, config.data.caption_dropout, generator)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=latents.device.type == "cuda"):
        loss, terms = model(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.grad is not None], config.optim.grad_clip
    )
    optimizer.step()
    return loss, terms, grad_norm


def train(config: Stage2Config, resume: str | None = None, progress: bool = True) -> Path:
    """Train; returns the run folder (checkpoints, history, TensorBoard, ``pipeline/``)."""
    run = Path(config.out_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(config, run)
    device = pick_device(config.device)
    layout = read_layout(wan_folder(config.models.wan, config.models.tiny_root))
    clips = OnlineClips(config, device) if config.online else CachedClips(config)
    torch.manual_seed(config.seed)
    model = build_model(config, layout).to(device)
    print(
        f"stage2 {config.objective.align.mode}: experts {', '.join(model.experts)} "
        f"({parameter_count(model.experts) / 1e6:.2f} M parameters), projectors "
        f"{parameter_count(model.projectors) / 1e6:.2f} M; {len(clips)} clips"
    )
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.optim.warmup_steps, config.optim.steps, "constant")
    )
    ema = {"ema": EMAModel(trained, decay=config.optim.ema_decay)} if config.optim.ema_decay else {}
    start = 0
    if (checkpoint := resume_point(run, resume)) is not None:
        start = load_checkpoint(checkpoint, model, optimizer, scheduler, ema)
        print(f"resumed from {checkpoint} at step {start}")
    steps_of = BucketSteps(clips.bucket_of, min(config.optim.batch_size, len(clips)), config.seed)
    writer = SummaryWriter(run / "tensorboard")
    history = load_history(run, start)
    model.train()
    validator = None
    steps = config.optim.steps
    bar = tqdm(range(start, steps), desc="stage2", initial=start, total=steps, disable=not progress)
    tick = time.perf_counter()
    for step in bar:
        batch = clips.batch(steps_of(step), device)
        loss, terms, grad_norm = train_step(model, optimizer, batch, noise_generator(config.seed, step), config)
        scheduler.step()
        if ema:
            ema["ema"].step(trained)
        done = step + 1
        if done % config.log_every == 0 or done == steps:
            seconds = (time.perf_counter() - tick) / config.log_every
            row = {"step": done, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
            row |= {"grad_norm": grad_norm.item(), "lr": scheduler.get_last_lr()[0], "s_per_step": seconds}
            row["peak_mib"] = _peak_mib(device)
            history.append(row)
            for key, value in row.items():
                if key != "step":
                    writer.add_scalar(f"train/{key}", value, done)
            bar.set_postfix({k: f"{row[k]:.4f}" for k in ("loss", "flow", "align")})
            tick = time.perf_counter()
        if config.validation.every and done % config.validation.every == 0:
            validator = validator or Validator(config, layout, model)
            validator(run / "samples" / f"step-{done:07d}")
        if done % config.save_every == 0 or done == steps:
            save_history(run, history)  # first: rows past a checkpoint are dropped on resume
            save_checkpoint(run, done, model, optimizer, scheduler, config, extra=ema)
    writer.close()
    if ema:  # the pipeline gets the averaged weights
        ema["ema"].copy_to(trained)
    export_pipeline(model, layout, run / "pipeline")
    return run


def _peak_mib(device: torch.device) -> float:
    """Peak memory so far: allocated on CUDA, the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _link_or_copy(source: str, target: str) -> None:
    """Unchanged weights are hard-linked where the file system allows (a Wan folder is tens of GB)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class Validator:
    """Videos of the validation prompts from the live expert(s), sampled with `WanPipeline`;
    the frozen parts of the pipeline are loaded once."""

    def __init__(self, config: Stage2Config, layout: WanLayout, model: Stage2Model):
        validation, data = config.validation, config.data
        self.model = model
        self.prompts = validation.prompts or [r.prompt() for r in load_manifest(data.train).records[:2]]
        live = {SUBFOLDER[name]: dit for name, dit in model.experts.items()}
        device = next(model.parameters()).device
        self.pipe = WanPipeline.from_pretrained(layout.folder, **live).to(device)
        shape = buckets(config)[0]  # validation videos take the first bucket's size
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
            return render(self.pipe, self.prompts, out, self.sampling, progress=False)
        finally:
            self.model.train()


def export_pipeline(model: Stage2Model, layout: WanLayout, out: Path) -> Path:
    """The Wan folder with the trained expert(s) in place, in Diffusers format (atomically)."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trained = {SUBFOLDER[name] for name in model.experts}
    shutil.copytree(
        layout.folder,
        partial,
        ignore=lambda folder, names: trained & set(names) if folder == str(layout.folder) else set(),
        copy_function=_link_or_copy,
    )
    for name, dit in model.experts.items():
        if getattr(dit, "peft_config", None):  # LoRA: merged into a copy, saved as plain weights
            dit = copy.deepcopy(dit)
            dit.fuse_lora()
            dit.unload_lora()
        dit.save_pretrained(partial / SUBFOLDER[name])
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
