"""A run's folder and a checkpoint's: the one place that names the files in them.

Training writes them, reports, the command line, the study runner and the adapters read
them; none of those spells a file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _step(step: int) -> str:
    return f"step-{step:07d}"


@dataclass(frozen=True)
class CheckpointDir:
    """``RUN/checkpoints/step-NNNNNNN``: one step's state (:mod:`sara.trainer.checkpoint`)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"  # the run's config, resolved

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"  # the whole trainable model (small models)

    @property
    def train(self) -> Path:
        return self.path / "train.pt"  # step, world size, scheduler, EMA counters

    @property
    def state(self) -> Path:
        return self.path / "state"  # the sharded model and optimizer (torch.distributed.checkpoint)

    def rng(self, rank: int) -> Path:
        return self.path / f"rng-{rank}.pt"


@dataclass(frozen=True)
class RunDir:
    """A training run's folder."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def history(self) -> Path:
        return self.path / "history.json"  # the logged rows

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"  # held while a run trains here

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest"  # names the newest published checkpoint

    def checkpoint(self, step: int) -> CheckpointDir:
        return CheckpointDir(self.checkpoints / _step(step))

    @property
    def cache(self) -> Path:
        return self.path / "cache"  # encoder features, when the config names no other folder

    @property
    def eval(self) -> Path:
        return self.path / "eval.json"  # Stage 1's held-out metrics

    @property
    def pipeline(self) -> Path:
        return self.path / "pipeline"  # Stage 2's export: a Diffusers-format Wan folder

    @property
    def lora(self) -> Path:
        return self.path / "lora"  # Stage 2's adapter files (diffusers and ComfyUI)

    def samples(self, step: int) -> Path:
        return self.path / "samples" / _step(step)  # validation videos at a step
