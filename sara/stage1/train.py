"""`sara stage1 train`: the Semantic Aligner on frozen V-JEPA 2 features.

The frozen encoders run once (:mod:`sara.stage1.features`) and are freed; the loop then
trains the aligner alone. The batches of step ``k`` are a pure function of ``(seed, k)``
— a per-epoch permutation — so a resumed run replays exactly the batches an
uninterrupted one would have seen. :class:`AlignerTraining` is what Stage 1 supplies to the
run skeleton (:mod:`sara.trainer.run`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.distributed as dist

from sara.config.stage1 import Stage1Config
from sara.data.datasets import BadSamples
from sara.data.manifest import load_manifest
from sara.device import pick_device
from sara.models.aligner import SemanticAligner, parameter_count
from sara.models.presets import resolve
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.parallel.collectives import average_gradients, gather_rows, world_mean
from sara.parallel.precision import param_dtype
from sara.parallel.world import World
from sara.run_dir import RunDir
from sara.stage1.evaluate import evaluate, format_metrics
from sara.stage1.features import Encoders, Stage1Features, compute_features
from sara.stage1.objective import contrast, gather, stage1_loss
from sara.trainer.batches import batch_samples
from sara.trainer.checkpoint import TrainState
from sara.trainer.logger import Logger
from sara.trainer.loop import LoopPlan
from sara.trainer.run import adamw_state, train_run

log = logging.getLogger(__name__)


def encoder_folders(config: Stage1Config) -> tuple[Path, Path, Path]:
    """The V-JEPA 2, caption encoder and caption embedder folders (tiny presets written once)."""
    models = config.models
    return (
        resolve(models.vjepa2, "vjepa2", models.tiny_root),
        resolve(models.caption_encoder, models.caption_encoder_kind, models.tiny_root),
        resolve(models.embedder, "qwen3vl", models.tiny_root),
    )


def load_encoders(config: Stage1Config, device: torch.device) -> Encoders:
    """The frozen V-JEPA 2, caption encoder and caption embedder of a run, on ``device``, in
    the run's compute dtype (``parallel.param_dtype``: bf16 on CUDA, fp32 on a CPU)."""
    models = config.models
    video_folder, caption_folder, embedder_folder = encoder_folders(config)
    dtype = param_dtype(config.parallel, device)
    return Encoders(
        video=VideoEncoder(video_folder, dtype).to(device),
        captions=CaptionEncoder(caption_folder, models.caption_encoder_kind, dtype).to(device),
        embedder=CaptionEmbedder(embedder_folder, models.embedder_instruction, dtype).to(device),
    )


def load_features(
    config: Stage1Config, splits: tuple[str, ...], progress: bool = True, world: World | None = None
) -> dict[str, Stage1Features]:
    """Run the frozen encoders over the manifests of ``splits`` (``train``/``heldout``). With
    many processes each encodes its share of the clips and texts; every process then reads
    all of them (:func:`~sara.stage1.features.compute_features`)."""
    world = world or World(rank=0, size=1, device=pick_device(config.device))
    encoders = load_encoders(config, world.device)
    cache = Path(config.cache_dir or RunDir(config.out_dir).cache)
    manifests = {}
    for split in splits:
        path = getattr(config.data, split)
        if not Path(path).is_file():
            raise ValueError(f"data.{split}: manifest {path} not found (make one with `sara data synth --out DIR`)")
        manifests[split] = load_manifest(path)
    out = {}
    for split, manifest in manifests.items():
        bad = BadSamples(config.data.max_bad_fraction)
        show = progress and world.is_main
        out[split] = compute_features(manifest, encoders, config.data, cache, bad, config.seed, show, world)
    return out


def build_aligner(config: Stage1Config, features: Stage1Features) -> SemanticAligner:
    return SemanticAligner(
        config.models.aligner, features.tokens.shape[-1], features.text.shape[-1], features.embeddings.shape[-1]
    )


def train(config: Stage1Config, resume: str | None = None, progress: bool = True) -> Path:
    """Train the aligner; returns the run folder (checkpoints, ``eval.json``, TensorBoard logs)."""
    return train_run(config, AlignerTraining(config, progress), resume, progress)


class AlignerTraining:
    """Stage 1 for :func:`~sara.trainer.run.train_run`. Under ``torchrun`` the aligner is
    data parallel (replicated; a few million parameters): each process takes its share of
    every batch's samples and of its distinct clips, and the InfoNCE term sees all of the
    clips' embeddings (gathered with their gradients)."""

    def __init__(self, config: Stage1Config, progress: bool = True):
        if config.parallel.ulysses != 1:
            raise ValueError(f"parallel.ulysses: {config.parallel.ulysses}; Stage 1 is data parallel only (1)")
        encoder_folders(config)  # the tiny presets, before the process group exists
        self.config, self.progress = config, progress
        optim = config.optim
        self.plan = LoopPlan(
            optim.steps, config.log_every, config.save_every, "stage1", ("loss", "bce", "dice", "infonce"), True
        )

    def build(self, world: World) -> TrainState:
        config = self.config
        features = load_features(config, ("train", "heldout"), self.progress, world)
        self.train_set, self.heldout = features["train"], features["heldout"]
        if len(self.train_set.tokens) < 2:
            raise ValueError(f"data.train: {len(self.train_set.tokens)} usable clip(s); InfoNCE needs at least 2")
        torch.manual_seed(config.seed)
        self.aligner = build_aligner(config, self.train_set).to(world.device).train()
        log.info(
            f"aligner {config.models.aligner}: {parameter_count(self.aligner) / 1e6:.2f} M parameters; "
            f"{len(self.train_set)} train / {len(self.heldout)} held-out samples on the {self.train_set.grid} grid"
        )
        self.batch_size = min(config.optim.batch_size, len(self.train_set))
        if self.batch_size % world.dp_size:
            raise ValueError(f"optim.batch_size: {self.batch_size} samples do not split over {world.dp_size} processes")
        self.world = world
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=world.device.type == "cuda")
        self.state = adamw_state(self.aligner, config.optim)
        return self.state

    def step(self, index: int) -> dict[str, torch.Tensor]:
        world, train_set, aligner, optimizer = self.world, self.train_set, self.aligner, self.state.optimizer
        samples = batch_samples(index, len(train_set), self.batch_size, self.config.seed)  # the global batch
        clips = train_set.clip_of[samples].unique()  # its distinct clips, for InfoNCE
        shares = clips.tensor_split(world.dp_size)  # each process embeds its share of them
        mine = samples.chunk(world.dp_size)[world.dp_rank]
        batch = gather(train_set, mine, shares[world.dp_rank], world.device) | contrast(train_set, clips, world.device)
        counts = [len(share) for share in shares]
        with self.autocast:
            loss, terms = stage1_loss(aligner, batch, self.config.loss, lambda video: gather_rows(video, counts, world))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the aligner is small: replicated, its gradients averaged. Every process computes the
        # whole InfoNCE, and the gather's backward sums it into each one's clips: the mean
        # counts it once
        average_gradients(list(aligner.parameters()), world)
        grad_norm = torch.nn.utils.clip_grad_norm_(aligner.parameters(), self.config.optim.grad_clip)
        optimizer.step()
        return {"loss": loss, **terms, "grad_norm": grad_norm}

    def reduce(self, figures: dict[str, torch.Tensor]) -> dict[str, float]:
        grad_norm = figures.pop("grad_norm")
        names = sorted(figures)
        values = torch.stack([figures[n].float() for n in names])
        values = world_mean(values) if self.world.distributed else values
        return dict(zip(names, values.tolist(), strict=True)) | {"grad_norm": grad_norm.item()}

    def after(self, done: int, logger: Logger) -> None:
        if done % self.config.eval_every == 0 or done == self.config.optim.steps:
            metrics = evaluate(self.aligner, self.heldout, self.world.device)  # every process: a sharded forward
            logger.scalars("eval", metrics, done)
            if self.world.is_main:
                logger.bar.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

    def finish(self, state: TrainState, run: RunDir) -> None:
        metrics = evaluate(self.aligner, self.heldout, self.world.device)
        if self.world.is_main:
            run.eval.write_text(json.dumps(metrics, indent=2) + "\n")
        log.info(format_metrics(metrics, self.heldout))
        if self.world.distributed:
            dist.barrier()  # the features' folder is the first process's: it goes when all are done with it
