"""Sharded, atomic checkpoints and exact resume, for one process or many.

A checkpoint is a folder ``<run>/checkpoints/step-NNNNNNN/``:

- ``state/``: ``torch.distributed.checkpoint`` (DCP) of the *trainable* weights (all of
  them in a full fine-tune; adapters and projectors under LoRA; frozen weights are the
  base model's and are not copied), the optimizer state and the EMA weights. Each rank
  writes its own shards; loading reshards, so a checkpoint written by N ranks resumes
  on M (1 included).
- ``train.pt``: the step, the world size, the scheduler and the EMA's counters;
  ``rng-R.pt``: rank R's random states (restored when the world size is the same).
  Tensors and plain values only, loaded with ``weights_only=True``: a checkpoint someone
  hands you cannot run code.
- ``config.yaml``; with ``consolidated``, also ``model.safetensors`` (the full trainable
  weights, for small models other tools read, such as the Stage 1 aligner).

Every rank writes into ``step-N.partial``; after a barrier rank 0 renames it and replaces
``checkpoints/latest``, so a crash at any moment leaves the previous checkpoint whole and
pointed to. Asynchronously (``begin_checkpoint(..., asynchronous=True)``) the shards are
copied to CPU memory and written in the background while training goes on; the
checkpoint is published at the first step boundary where every rank's shards are on disk
(the loop asks each step), and at the latest before the next one begins or the run ends. Batches and noise are functions of ``(seed, step)``, so the step is the whole
data position.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from sara.config import config_to_yaml
from sara.files import write_text_atomic
from sara.parallel.world import World
from sara.run_dir import CheckpointDir, RunDir

TRAINABLE = StateDictOptions(ignore_frozen_params=True)
CONSOLIDATED = StateDictOptions(ignore_frozen_params=True, full_state_dict=True, cpu_offload=True)
KEEP = 2  # newest checkpoints kept


@dataclass
class TrainState:
    """What a checkpoint holds and a resume restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: EMAModel | None = None  # of the trainable parameters, in ``named_parameters`` order

    @property
    def trained(self) -> list[nn.Parameter]:
        """The parameters the optimizer steps (and the EMA averages), in ``parameters`` order."""
        return trained_parameters(self.model)


def trained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """``model``'s parameters that require gradients, in ``parameters`` order."""
    return [p for p in model.parameters() if p.requires_grad]


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain Python values: what ``weights_only`` loading accepts."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    numpy = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position)}
    numpy |= {"has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["name"], keys, numpy["position"], numpy["has_gauss"], numpy["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sharded(state: TrainState) -> dict[str, Any]:
    """The DCP part of the state: trainable weights, optimizer, EMA weights (live tensors,
    so that loading fills them in place)."""
    model, optim = get_state_dict(state.model, state.optimizer, options=TRAINABLE)
    out = {"model": model, "optim": optim}
    if state.ema is not None:
        names = [n for n, p in state.model.named_parameters() if p.requires_grad]
        out["ema"] = dict(zip(names, state.ema.shadow_params, strict=True))
    return out


ONE_PROCESS = "torch.distributed is (disabled, )?unavailable or uninitialized"


@contextlib.contextmanager
def _one_process_ok():
    """DCP warns that it assumes one process when there is no process group: here that is
    the intent (a run of one process, or reading a checkpoint back)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ONE_PROCESS)
        yield


def _barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


@dataclass
class PendingCheckpoint:
    """A checkpoint whose shards are written (or being written, asynchronously); ``publish``
    waits for them on every rank and makes it the latest."""

    final: Path
    partial: Path
    world: World
    plain: dict[str, Any]  # train.pt: step, world size, scheduler, EMA counters (as at the step)
    config: str  # config.yaml
    full: dict[str, torch.Tensor] | None = None  # model.safetensors (consolidated), on rank 0
    future: Any = None  # DCP's background save, when asynchronous

    def written(self) -> bool:
        """Whether this rank's shards are on disk (at once for a synchronous checkpoint)."""
        return self.future is None or getattr(self.future, "upload_completion", self.future).done()

    def publish(self) -> Path:
        if self.future is not None:  # this rank's shards are on disk
            getattr(self.future, "upload_completion", self.future).result()
        _barrier(self.world)
        if self.world.is_main:
            partial = CheckpointDir(self.partial)
            if self.full is not None:
                save_file({k: v.contiguous() for k, v in self.full.items()}, partial.weights)
            torch.save(self.plain, partial.train)
            partial.config.write_text(self.config)
            shutil.rmtree(self.final, ignore_errors=True)
            self.partial.rename(self.final)
            root = self.final.parent
            write_text_atomic(RunDir(root.parent).latest, self.final.name + "\n")
            for old in sorted(p for p in root.glob("step-*") if not p.name.endswith(".partial"))[:-KEEP]:
                shutil.rmtree(old)
        _barrier(self.world)  # no rank reads or writes the run folder before the checkpoint is published
        return self.final


_ASYNC_GROUPS: dict[int, Any] = {}


def async_group(world: World):
    """A gloo group for the background saves' own collectives, so that they never share a
    communicator with training's. Created once, by every rank together: a run with
    ``async_save`` calls it at start-up, so that a network setting gloo cannot use
    (``GLOO_SOCKET_IFNAME``) fails the run before its first step, not at its first checkpoint."""
    if not world.distributed:
        return None
    if world.size not in _ASYNC_GROUPS:
        _ASYNC_GROUPS[world.size] = dist.new_group(backend="gloo")
    return _ASYNC_GROUPS[world.size]


def begin_checkpoint(
    run_dir: str | Path,
    step: int,
    state: TrainState,
    config: Any,
    world: World,
    consolidated: bool = False,
    asynchronous: bool = False,
) -> PendingCheckpoint:
    """Start the checkpoint of ``step`` (every rank calls it): each rank writes its shards —
    with ``asynchronous``, from a copy in CPU memory, in a background thread, while training
    goes on — and the rest is captured now and written by :meth:`PendingCheckpoint.publish`."""
    run = RunDir(run_dir)
    root, final = run.checkpoints, run.checkpoint(step).path
    partial = final.with_name(final.name + ".partial")
    if world.is_main:
        for stale in root.glob("step-*.partial"):  # left by a run that died before publishing
            shutil.rmtree(stale)
        partial.mkdir(parents=True)
    _barrier(world)
    sharded = _sharded(state)
    with _one_process_ok():
        if asynchronous:
            if not world.distributed:  # the background thread warns outside any catch_warnings
                warnings.filterwarnings("ignore", message=ONE_PROCESS)
            future = dcp.async_save(
                sharded,
                checkpoint_id=CheckpointDir(partial).state,
                process_group=async_group(world),
                no_dist=not world.distributed,
            )
        else:
            dcp.save(sharded, checkpoint_id=CheckpointDir(partial).state, no_dist=not world.distributed)
            future = None
    torch.save(_rng_state(), CheckpointDir(partial).rng(world.rank))
    full = get_model_state_dict(state.model, options=CONSOLIDATED) if consolidated else None
    ema = {k: v for k, v in state.ema.state_dict().items() if k != "shadow_params"} if state.ema else None
    plain = {"step": step, "world_size": world.size, "scheduler": state.scheduler.state_dict(), "ema": ema}
    return PendingCheckpoint(final, partial, world, plain, config_to_yaml(config), full, future)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``checkpoints/latest`` points to, or ``None`` when the run has none."""
    pointer = RunDir(run_dir).latest
    if not pointer.is_file():
        return None
    return pointer.parent / pointer.read_text().strip()


def resume_point(run_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint a ``--resume`` value names: ``latest`` (none yet: start afresh, so one
    command serves a first start and every restart), a checkpoint folder, or ``None``."""
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    if not CheckpointDir(Path(resume)).train.is_file():
        raise ValueError(f"--resume: {resume} is not a checkpoint folder (no train.pt)")
    return Path(resume)


def _load_plain(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, weights_only=True)  # tensors and plain values: runs no code
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not tensors and plain values"
        raise ValueError(f"{path}: refused, it holds more than tensors and plain values ({reason})") from None


def load_checkpoint(checkpoint: str | Path, state: TrainState, world: World) -> int:
    """Restore weights, optimizer, scheduler, EMA and (same world size) RNG states; returns
    the step to continue from. Every rank calls it.

    The optimizer state may be partial: AdamW holds state only for parameters that have
    stepped, and a two-expert run checkpointed before both experts trained has none for
    one of them. Those parameters start fresh, as in the run that wrote the checkpoint
    (their step counts, hence AdamW's bias corrections, stay exact).

    Raises:
        ValueError: the checkpoint lacks a trainable weight (another model or LoRA setting).
    """
    checkpoint = Path(checkpoint)
    files = CheckpointDir(checkpoint)
    train = _load_plain(files.train)
    stored = set(dcp.FileSystemReader(files.state).read_metadata().state_dict_metadata)
    names = {name: p for name, p in state.model.named_parameters() if p.requires_grad}
    if missing := [name for name in names if f"model.{name}" not in stored]:
        raise ValueError(
            f"{checkpoint}: holds no {missing[0]} ({len(missing)} trainable weights missing): "
            "written by a run with another model or optim.lora_rank"
        )
    sharded = _sharded(state)  # a fresh optimizer gets state for every parameter here (a step at lr 0)
    with _one_process_ok():
        dcp.load(
            sharded,
            checkpoint_id=files.state,
            planner=DefaultLoadPlanner(allow_partial_load=True),
            no_dist=not world.distributed,
        )
    set_state_dict(
        state.model,
        state.optimizer,
        model_state_dict=sharded["model"],
        optim_state_dict=sharded["optim"],
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )
    for name, parameter in names.items():
        if f"optim.state.{name}.step" not in stored:  # never stepped when the checkpoint was written
            state.optimizer.state.pop(parameter, None)
    state.scheduler.load_state_dict(train["scheduler"])
    if state.ema is not None:
        state.ema.load_state_dict(train["ema"])  # the counters; the weights were loaded in place
    rng = files.rng(world.rank)
    if train["world_size"] == world.size and rng.is_file():
        _set_rng_state(_load_plain(rng))
    return train["step"]


def load_weights(checkpoint: str | Path, model: nn.Module) -> None:
    """Load a consolidated checkpoint's weights into ``model`` (every key must match)."""
    model.load_state_dict(load_file(CheckpointDir(Path(checkpoint)).weights))
