"""`sara stage1 train`: the Semantic Aligner on frozen V-JEPA 2 features.

The frozen encoders run once (:mod:`sara.stage1.features`) and are freed; the loop then
trains the aligner alone. The batches of step ``k`` are a pure function of ``(seed, k)``
— a per-epoch permutation — so a resumed run replays exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sara.checkpoint import load_checkpoint, resume_point, save_checkpoint
from sara.config import save_config
from sara.config.stage1 import Stage1Config
from sara.data.datasets import BadSamples
from sara.data.manifest import load_manifest
from sara.device import pick_device
from sara.models.aligner import SemanticAligner, parameter_count
from sara.models.presets import resolve
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.stage1.evaluate import evaluate, format_metrics
from sara.stage1.features import Encoders, Stage1Features, compute_features
from sara.stage1.objective import gather, stage1_loss
from sara.training import batch_samples, load_history, lr_factor, save_history


def load_encoders(config: Stage1Config, device: torch.device) -> Encoders:
    """The frozen V-JEPA 2, caption encoder and caption embedder of a run, on ``device``."""
    models = config.models
    video_folder = resolve(models.vjepa2, "vjepa2", models.tiny_root)
    caption_folder = resolve(models.caption_encoder, models.caption_encoder_kind, models.tiny_root)
    embedder_folder = resolve(models.embedder, "qwen3vl", models.tiny_root)
    return Encoders(
        video=VideoEncoder(video_folder).to(device),
        video_folder=video_folder,
        captions=CaptionEncoder(caption_folder, models.caption_encoder_kind).to(device),
        embedder=CaptionEmbedder(embedder_folder, models.embedder_instruction).to(device),
    )


def load_features(config: Stage1Config, splits: tuple[str, ...], progress: bool = True) -> dict[str, Stage1Features]:
    """Run the frozen encoders over the manifests of ``splits`` (``train``/``heldout``)."""
    encoders = load_encoders(config, pick_device(config.device))
    cache = Path(config.cache_dir or Path(config.out_dir) / "cache")
    out = {}
    for split in splits:
        path = getattr(config.data, split)
        if not Path(path).is_file():
            raise ValueError(f"data.{split}: manifest {path} not found (make one with `sara data synth --out DIR`)")
        bad = BadSamples(config.data.max_bad_fraction)
        out[split] = compute_features(load_manifest(path), encoders, config.data, cache, bad, config.seed, progress)
    return out


def build_aligner(config: Stage1Config, features: Stage1Features) -> SemanticAligner:
    return SemanticAligner(
        config.models.aligner, features.tokens.shape[-1], features.text.shape[-1], features.embeddings.shape[-1]
    )


def train(config: Stage1Config, resume: str | None = None, progress: bool = True) -> Path:
    """Train the aligner; returns the run folder (checkpoints, ``eval.json``, TensorBoard logs)."""
    run = Path(config.out_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(config, run)
    device = pick_device(config.device)
    features = load_features(config, ("train", "heldout"), progress)
    train_set, heldout = features["train"], features["heldout"]
    if len(train_set.tokens) < 2:
        raise ValueError(f"data.train: {len(train_set.tokens)} usable clip(s); InfoNCE needs at least 2")
    torch.manual_seed(config.seed)
    aligner = build_aligner(config, train_set).to(device)
    print(
        f"aligner {config.models.aligner}: {parameter_count(aligner) / 1e6:.2f} M parameters; "
        f"{len(train_set)} train / {len(heldout)} held-out samples on the {train_set.grid} grid"
    )
    optimizer = torch.optim.AdamW(aligner.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.optim.warmup_steps, config.optim.steps))
    start = 0
    if (checkpoint := resume_point(run, resume)) is not None:
        start = load_checkpoint(checkpoint, aligner, optimizer, scheduler)
        print(f"resumed from {checkpoint} at step {start}")
    batch_size = min(config.optim.batch_size, len(train_set))
    writer = SummaryWriter(run / "tensorboard")
    history = load_history(run, start)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    aligner.train()
    bar = tqdm(
        range(start, config.optim.steps), desc="stage1", initial=start, total=config.optim.steps, disable=not progress
    )
    tick = time.perf_counter()
    for step in bar:
        batch = gather(train_set, batch_samples(step, len(train_set), batch_size, config.seed), device)
        with autocast:
            loss, terms = stage1_loss(aligner, batch, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(aligner.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % config.log_every == 0 or done == config.optim.steps:
            seconds = (time.perf_counter() - tick) / config.log_every
            row = {"step": done, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
            row |= {"grad_norm": grad_norm.item(), "lr": scheduler.get_last_lr()[0], "s_per_step": seconds}
            _log(row, history, writer, bar)
            tick = time.perf_counter()
        if done % config.eval_every == 0 or done == config.optim.steps:
            metrics = evaluate(aligner, heldout, device)
            for key, value in metrics.items():
                writer.add_scalar(f"eval/{key}", value, done)
            tqdm.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if done % config.save_every == 0 or done == config.optim.steps:
            save_history(run, history)  # first: rows past a checkpoint are dropped on resume
            save_checkpoint(run, done, aligner, optimizer, scheduler, config)
    writer.close()
    metrics = evaluate(aligner, heldout, device)
    (run / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_metrics(metrics, heldout))
    return run


def _log(row: dict, history: list[dict], writer: SummaryWriter, bar: tqdm) -> None:
    """One log point: history, TensorBoard, the bar's loss terms."""
    history.append(row)
    for key, value in row.items():
        if key != "step":
            writer.add_scalar(f"train/{key}", value, row["step"])
    bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "bce", "dice", "infonce")})
