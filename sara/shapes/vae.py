"""The ``shapes`` Wan preset: the ``tiny`` Wan folder with a VAE trained on the shapes world,
so that what a DiT generates decodes to coloured shapes, not texture, and its umT5 pretrained
on the world's captions (:mod:`sara.shapes.text`), so that the DiT can read which colour and
motion go with which shape.

Same class (`AutoencoderKLWan`: causal, 4× in time, 8× in space, 16 latent channels) and the
same Diffusers folder layout as ``tiny``, built with Wan2.2's residual blocks (``is_residual``:
parameter-free average-pool and duplicate shortcuts around every resampling) at Wan2.1's
compression (no pixel patches). The shortcuts carry each patch's mean colour to the latent and
back from the first step; without them a VAE this narrow needs thousands of steps to learn the
colours at all.

It trains on crops of rendered clips (``pairs: seen``, in memory), on single frames. The VAE
starts frame-wise — every causal 3×3×3 convolution sees only its own frame and the temporal
resamplers copy frames (Wan's own initialisation of them) — so what it learns on images
already holds for videos, at a fifth of a clip's cost per sample. It stays frame-wise: each
latent frame holds one frame of its 4-frame step, and decodes to that frame 4 times, so
motion moves in 4-frame steps. A second phase on short clips, where the temporal taps learn
to blend frames (``clip_steps`` > 0), is optional: at the budgets tried it blurred colours
where shapes meet into fringes of a third palette colour, and the gate fell
(``docs/EVALUATION.md``).

The loss is L1 of the decoded posterior mode (a sampled latent's noise swamps a fresh
encoder's signal, and Stage 2 encodes with the mode too) plus a small KL term. Pixels on an
entity's outline weigh 5× (``outline_weight``): blur there is what rounds a star into a blob
and leaves an orange fringe between yellow and red, and the metric reads both. Weighting
whole entities up instead tinted backgrounds towards palette colours. Training runs
:func:`sara.models.vae_layers.fast_layers`, exact and about twice as fast on CPU. The latents'
per-channel mean and standard deviation go into the config (``latents_mean``/``latents_std``,
which Wan's pipeline and ``sara``'s encoders normalise by), as the real Wan VAEs do.

The gate: reconstructions of held-out clips (the unseen-pair prompt set) are scored by the
exact shapes metric beside the clips themselves; both are written to ``vae/gate.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample
from tqdm import tqdm
from transformers import AutoTokenizer, UMT5EncoderModel

from sara.models.vae_layers import fast_layers
from sara.models.wan import save_tiny_wan, tiny_vae
from sara.models.weights import seeded
from sara.shapes.metric import METRICS, score_video
from sara.shapes.prompt_set import prompt_set_spec
from sara.shapes.render import SynthSpec, render_clip
from sara.shapes.text import TextRecipe, pretrained_text_encoder
from sara.stats import summarise

Z_DIM = 16  # latent channels, as the tiny DiT and Wan2.1's VAE


@dataclass(frozen=True)
class VaeRecipe:
    clips: int = 120  # rendered training clips of the seen-pair world
    image_steps: int = 1250  # phase 1: optimizer steps on single frames
    image_batch: int = 8
    image_lr: float = 1e-3  # AdamW, after a linear warm-up; ×0.1 for the last fifth of each phase
    clip_steps: int = 0  # phase 2 (optional): optimizer steps on short clips; 0: the VAE stays frame-wise
    clip_batch: int = 4
    clip_lr: float = 1e-4  # low: the temporal taps learn without undoing phase 1
    frames: int = 5  # frames per clip crop: the first frame and one 4-frame latent step
    crop: int = 64  # pixels per crop side (32 collapses to a constant output: border effects at 4×4 latents)
    warmup: int = 20
    kl_weight: float = 1e-6
    outline_weight: float = 4.0  # extra L1 weight of entity-edge pixels (5× in all), where blur misleads
    base_dim: int = 16  # the VAE's first width (tiny: 8)
    size: int = 128  # rendered frame side
    length: int = 17  # rendered frames per clip
    gate_clips: int = 16  # held-out clips of the gate


def shapes_vae(base_dim: int) -> AutoencoderKLWan:
    """A narrow residual causal VAE: 4× in time, 8× in space (no pixel patches), started frame-wise."""
    vae = tiny_vae(Z_DIM, residual=True, patches=False, base_dim=base_dim)
    start_frame_wise(vae)
    return vae


@torch.no_grad()
def start_frame_wise(vae: AutoencoderKLWan) -> None:
    """Make ``vae`` act on each frame alone: the past taps of every causal 3×3×3 convolution
    are zero, and each temporal resampler copies a frame — down: the middle tap of its stride-2
    window; up: the current frame into both output frames."""
    for module in vae.modules():
        if isinstance(module, WanCausalConv3d) and module.weight.shape[2:] == (3, 3, 3):
            module.weight[:, :, :-1] = 0
        if isinstance(module, WanResample) and hasattr(module, "time_conv"):
            weight = module.time_conv.weight  # (out, in, 3, 1, 1)
            weight.zero_()
            module.time_conv.bias.zero_()
            out, into = weight.shape[:2]
            if module.mode == "downsample3d":
                weight[:, :, 1, 0, 0] = torch.eye(out, into)
            else:  # upsample3d: out = 2·in, the two frames of each input frame
                weight[: out // 2, :, -1, 0, 0] = torch.eye(out // 2, into)
                weight[out // 2 :, :, -1, 0, 0] = torch.eye(out // 2, into)


def decode_unclamped(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """``vae.decode`` without its final clamp to [−1, 1], which zeroes the gradient of every
    pixel a fresh decoder overshoots. ``latents [B, C, F, h, w]`` → ``[B, 3, T, H, W]``."""
    vae.clear_cache()
    hidden = vae.post_quant_conv(latents)
    frames = []
    for index in range(latents.shape[2]):
        # the decoder caches each causal convolution's past frames, latent frame by latent frame
        vae._conv_idx = [0]
        frames.append(
            vae.decoder(
                hidden[:, :, index : index + 1],
                feat_cache=vae._feat_map,
                feat_idx=vae._conv_idx,
                first_chunk=index == 0,
            )
        )
    vae.clear_cache()
    return torch.cat(frames, dim=2)


def _pixels(video: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., T, H, W, 3]`` → ``float [..., 3, T, H, W]`` in [−1, 1]."""
    return video.movedim(-1, -4).float() / 127.5 - 1


def _video(pixels: torch.Tensor) -> torch.Tensor:
    """``float [3, T, H, W]`` in [−1, 1] → ``uint8 [T, H, W, 3]``."""
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(0, -1)


def seen_clips(recipe: VaeRecipe, seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` clips of the seen-pair world the VAE learns from, ``uint8 [N, T, H, W, 3]``,
    and their entity outlines, ``bool [N, T, H, W]``: pixels within one of an entity's edge."""
    spec = SynthSpec(frames=recipe.length, size=recipe.size, seed=seed, pairs="seen")
    videos, outlines = [], []
    for index in range(count):
        clip = render_clip(spec, index)
        masks = torch.from_numpy(np.stack(clip.masks)).float()  # (E, T, H, W)
        grown, shrunk = F.max_pool2d(masks, 3, 1, 1), -F.max_pool2d(-masks, 3, 1, 1)
        videos.append(torch.from_numpy(clip.video))
        outlines.append((grown > shrunk).any(dim=0))
    return torch.stack(videos), torch.stack(outlines)


def vae_step(
    vae: AutoencoderKLWan, optimizer: torch.optim.Optimizer, clip: torch.Tensor, weight: torch.Tensor, kl_weight: float
) -> float:
    """One optimizer step on ``clip [B, 3, T, h, w]``: L1 of the decoded posterior mode, each
    pixel weighted by ``weight [B, 1, T, h, w]``, plus ``kl_weight`` × KL; returns the plain L1."""
    posterior = vae.encode(clip).latent_dist
    error = (decode_unclamped(vae, posterior.mode()) - clip).abs()
    loss = (weight * error).mean() / weight.mean() + kl_weight * posterior.kl().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return error.mean().item()


def train_vae(vae: AutoencoderKLWan, recipe: VaeRecipe, seed: int, progress: bool = True) -> list[float]:
    """Train ``vae`` in place on random crops of the seen-pair world; returns the L1 per step."""
    videos, outlines = seen_clips(recipe, seed, recipe.clips)  # (N, T, H, W, 3), (N, T, H, W)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    vae.train()
    phases = [
        (recipe.image_steps, 1, recipe.image_batch, recipe.image_lr),
        (recipe.clip_steps, recipe.frames, recipe.clip_batch, recipe.clip_lr),
    ]
    phases = [phase for phase in phases if phase[0] > 0]
    with fast_layers(vae):  # exact, about twice as fast on CPU
        for steps, frames, batch, lr in phases:
            optimizer = torch.optim.AdamW(vae.parameters(), lr, weight_decay=0.0)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s, steps=steps: min(1.0, (s + 1) / recipe.warmup) * (0.1 if s >= 0.8 * steps else 1.0)
            )
            bar = tqdm(range(steps), desc=f"shapes VAE, {frames}-frame crops", disable=not progress)
            for _ in bar:
                rows = torch.randint(len(videos), (batch,), generator=generator)
                start = int(torch.randint(recipe.length - frames + 1, (1,), generator=generator))
                y, x = torch.randint(recipe.size - recipe.crop + 1, (2,), generator=generator).tolist()
                crop = (rows, slice(start, start + frames), slice(y, y + recipe.crop), slice(x, x + recipe.crop))
                clip = _pixels(videos[crop])  # (B, 3, T, h, w)
                weight = 1 + recipe.outline_weight * outlines[crop][:, None].float()  # (B, 1, T, h, w)
                losses.append(vae_step(vae, optimizer, clip, weight, recipe.kl_weight))
                schedule.step()
                bar.set_postfix(l1=f"{losses[-1]:.3f}")
    vae.eval()
    return losses


@torch.no_grad()
def reconstruct(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """``video uint8 [T, H, W, 3]`` encoded (posterior mode) and decoded, as ``uint8 [T, H, W, 3]``."""
    return _video(vae.decode(vae.encode(_pixels(video)[None]).latent_dist.mode()).sample[0])


@torch.no_grad()
def gate(vae: AutoencoderKLWan, recipe: VaeRecipe) -> dict:
    """The shapes metric of held-out clips (unseen pairs) and of their reconstructions: per
    metric, the mean over clips with its bootstrap interval."""
    spec = prompt_set_spec(recipe.gate_clips, 1000, recipe.length, recipe.size)
    scores: dict[str, list[dict]] = {"ground truth": [], "reconstruction": []}
    for index in range(recipe.gate_clips):
        clip = render_clip(spec, index)
        facts = {"size": recipe.size, **clip.facts}
        video = torch.from_numpy(clip.video)
        scores["ground truth"].append(score_video(video, facts))
        scores["reconstruction"].append(score_video(reconstruct(vae, video), facts))
    return {name: summarise(rows, METRICS) for name, rows in scores.items()}


@torch.no_grad()
def latent_statistics(vae: AutoencoderKLWan, recipe: VaeRecipe, seed: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the latents of 16 training clips."""
    clips = _pixels(seen_clips(recipe, seed, 16)[0])
    latents = torch.cat([vae.encode(c[None]).latent_dist.mode() for c in clips])  # (16, C, F, h, w)
    return latents.mean(dim=(0, 2, 3, 4)).tolist(), latents.std(dim=(0, 2, 3, 4)).tolist()


def save_shapes_wan(
    out_dir: str | Path,
    seed: int = 0,
    variant: str = "medium",
    recipe: VaeRecipe | None = None,
    text: TextRecipe | None = None,
) -> Path:
    """The tiny Wan folder ``variant`` (the shapes preset: ``medium``) with its VAE replaced by one
    trained on the shapes world and its umT5 pretrained on the world's captions."""
    recipe = recipe or VaeRecipe()
    out = save_tiny_wan(out_dir, seed=seed, variant=variant)
    start = time.perf_counter()
    with seeded(seed):
        vae = shapes_vae(recipe.base_dim)
    losses = train_vae(vae, recipe, seed)
    with fast_layers(vae):  # exact: the same statistics and gate, sooner
        mean, std = latent_statistics(vae, recipe, seed)
        seconds = time.perf_counter() - start
        scores = gate(vae, recipe)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(out / "vae")
    _pretrain_text(out, seed, text)
    report = {
        "recipe": asdict(recipe),
        "seconds": round(seconds, 1),
        "final_l1": float(np.mean(losses[-20:])),
        "gate": scores,
    }
    (out / "vae" / "gate.json").write_text(json.dumps(report, indent=2) + "\n")
    return out


def _pretrain_text(out: Path, seed: int, recipe: TextRecipe | None) -> None:
    """Replace the folder's random umT5 with one pretrained on the world's captions."""
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    encoder = UMT5EncoderModel.from_pretrained(out / "text_encoder")
    with seeded(seed):
        report = pretrained_text_encoder(encoder, tokenizer, seed, recipe)
    encoder.save_pretrained(out / "text_encoder")
    (out / "text_encoder" / "gate.json").write_text(json.dumps(report, indent=2) + "\n")
