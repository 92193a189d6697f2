"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``<run>/checkpoints/step-NNNNNNN/`` holding the trainable weights
(``model.safetensors``), everything else a resume needs (``state.pt``: optimizer,
scheduler, step, RNG states) and the resolved config. ``state.pt`` holds tensors and plain
values only and is loaded with ``weights_only=True``: a checkpoint someone hands you cannot
run code. A checkpoint is written under a ``.partial`` name and renamed when complete, and
``checkpoints/latest`` is replaced atomically after it, so a crash at any moment leaves the
previous checkpoint whole and pointed to.
"""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sara.config import config_to_yaml


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


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: Any,
    keep: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``step``; keeps the newest ``keep``. Returns its folder.

    ``extra`` maps names to objects with ``state_dict()`` (e.g. an EMA of the weights) whose
    states are saved too and restored by :func:`load_checkpoint`.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:07d}"
    partial = root / f"step-{step:07d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, partial / "model.safetensors")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "extra": {name: obj.state_dict() for name, obj in (extra or {}).items()},
    }
    torch.save(state, partial / "state.pt")
    (partial / "config.yaml").write_text(config_to_yaml(config))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    pointer = root / "latest.tmp"
    pointer.write_text(final.name + "\n")
    pointer.replace(root / "latest")
    for old in sorted(p for p in root.glob("step-*") if not p.name.endswith(".partial"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``checkpoints/latest`` points to, or ``None`` when the run has none."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
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
    if not (Path(resume) / "model.safetensors").is_file():
        raise ValueError(f"--resume: {resume} is not a checkpoint folder (no model.safetensors)")
    return Path(resume)


def load_weights(checkpoint: str | Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's weights into ``model`` (every key must match)."""
    model.load_state_dict(load_file(Path(checkpoint) / "model.safetensors"))


def load_checkpoint(
    checkpoint: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any] | None = None,
) -> int:
    """Restore weights, optimizer, scheduler, ``extra`` and RNG states; returns the step to continue from."""
    load_weights(checkpoint, model)
    path = Path(checkpoint) / "state.pt"
    try:
        state = torch.load(path, weights_only=True)  # tensors and plain values: runs no code
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not tensors and plain values"
        raise ValueError(f"{path}: refused, it holds more than tensors and plain values ({reason})") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name, obj in (extra or {}).items():
        obj.load_state_dict(state["extra"][name])
    _set_rng_state(state["rng"])
    return state["step"]
