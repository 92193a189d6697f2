"""`sara stage1 train`: the Semantic Aligner on frozen V-JEPA 2 features.

The frozen encoders run once (:mod:`sara.stage1.features`) and are freed; the loop then
trains the aligner alone. The batches of step ``k`` are a pure function of ``(seed, k)``
— a per-epoch permutation — so a resumed run replays exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sara.config import save_config
from sara.config.stage1 import Stage1Config
from sara.data.datasets import BadSamples
from sara.data.manifest import load_manifest
from sara.device import pick_device
from sara.models.aligner import SemanticAligner, parameter_count
from sara.models.presets import resolve
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.parallel.world import World
from sara.stage1.evaluate import evaluate, format_metrics
from sara.stage1.features import Encoders, Stage1Features, compute_features
from sara.stage1.objective import gather, stage1_loss
from sara.trainer.batches import batch_samples, lr_factor
from sara.trainer.checkpoint import TrainState, load_checkpoint, resume_point
from sara.trainer.logger import Logger
from sara.trainer.loop import LoopPlan, run_loop
from sara.trainer.preemption import RunLock


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
    world = World(rank=0, size=1, device=pick_device(config.device))
    with RunLock(run, world):
        features = load_features(config, ("train", "heldout"), progress)
        train_set, heldout = features["train"], features["heldout"]
        if len(train_set.tokens) < 2:
            raise ValueError(f"data.train: {len(train_set.tokens)} usable clip(s); InfoNCE needs at least 2")
        torch.manual_seed(config.seed)
        aligner = build_aligner(config, train_set).to(world.device)
        print(
            f"aligner {config.models.aligner}: {parameter_count(aligner) / 1e6:.2f} M parameters; "
            f"{len(train_set)} train / {len(heldout)} held-out samples on the {train_set.grid} grid"
        )
        optim = config.optim
        optimizer = torch.optim.AdamW(aligner.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim.warmup_steps, optim.steps))
        state = TrainState(aligner, optimizer, scheduler)
        start = 0
        if (checkpoint := resume_point(run, resume)) is not None:
            start = load_checkpoint(checkpoint, state, world)
            print(f"resumed from {checkpoint} at step {start}")
        batch_size = min(optim.batch_size, len(train_set))
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=world.device.type == "cuda")
        aligner.train()

        def step(index: int) -> dict[str, torch.Tensor]:
            batch = gather(train_set, batch_samples(index, len(train_set), batch_size, config.seed), world.device)
            with autocast:
                loss, terms = stage1_loss(aligner, batch, config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(aligner.parameters(), optim.grad_clip)
            optimizer.step()
            return {"loss": loss, **terms, "grad_norm": grad_norm}

        def after(done: int, logger: Logger) -> None:
            if done % config.eval_every == 0 or done == optim.steps:
                metrics = evaluate(aligner, heldout, world.device)
                logger.scalars("eval", metrics, done)
                logger.bar.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

        plan = LoopPlan(
            optim.steps, config.log_every, config.save_every, "stage1", ("loss", "bce", "dice", "infonce"), True
        )
        if not run_loop(run, world, state, config, plan, start, step, _as_floats, after, progress):
            return run
        metrics = evaluate(aligner, heldout, world.device)
        (run / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(format_metrics(metrics, heldout))
    return run


def _as_floats(figures: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: value.item() for key, value in figures.items()}
