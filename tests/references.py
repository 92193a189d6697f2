"""What the tests hold the package against: the dense pair weights, the inverse σ shift, and
a checkpoint written in one call and read back whole."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from sara.routing import check_saliency, get_route
from sara.run_dir import CheckpointDir
from sara.trainer.checkpoint import begin_checkpoint


def pair_weights(saliency: Tensor, mode: str) -> Tensor:
    """Dense pair weights ``[B, N] -> [B, N, N]`` of a routing mode."""
    route = get_route(mode)
    check_saliency(saliency)
    return route.weights(saliency, saliency)


def unshift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """The inverse of :func:`sara.losses.flow.shift_sigma`."""
    return sigma / (shift - (shift - 1) * sigma)


def save_checkpoint(run_dir, step: int, state, config, world, consolidated: bool = False) -> Path:
    """Write and publish the checkpoint of ``step`` at once, as a synchronous run does."""
    return begin_checkpoint(run_dir, step, state, config, world, consolidated).publish()


def trainable_weights(checkpoint: str | Path) -> dict[str, Tensor]:
    """A checkpoint's full trainable weights, read in this process (any world size wrote it)."""
    folder = CheckpointDir(Path(checkpoint)).state
    stored = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    model = {
        key.removeprefix("model."): torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in stored.items()
        if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)
    }
    dcp.load({"model": model}, checkpoint_id=folder, no_dist=True)
    return model
