"""Entity masks: compact storage (bit-packed, compressed ``.npz``) and pooling to the token grid."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class MaskError(ValueError):
    """A mask file that is missing or cannot be read."""


def save_mask(path: str | Path, mask: np.ndarray | torch.Tensor) -> Path:
    """Store a boolean mask ``[T, H, W]`` as bits in a compressed ``.npz`` (atomically)."""
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, bits=np.packbits(mask.ravel()), shape=np.array(mask.shape, dtype=np.int64))
    tmp.replace(path)
    return path


def load_mask(path: str | Path) -> torch.Tensor:
    """Read a mask written by :func:`save_mask`: ``bool [T, H, W]``."""
    path = Path(path)
    if not path.is_file():
        raise MaskError("mask file not found")
    try:
        with np.load(path) as data:
            shape = tuple(int(s) for s in data["shape"])
            bits = np.unpackbits(data["bits"], count=int(np.prod(shape)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise MaskError(f"mask file cannot be read ({type(exc).__name__})") from None
    return torch.from_numpy(bits.reshape(shape).astype(bool))


def pool_to_grid(mask: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Covered fraction of each tubelet × patch × patch cell: ``[T, H, W] -> [T', H', W']``.

    ``T`` is padded up to a multiple of ``tubelet`` by repeating the last frame, as video
    encoders pad their input; ``H`` and ``W`` must be multiples of ``patch``.
    """
    frames, height, width = mask.shape
    if height % patch or width % patch:
        raise ValueError(f"mask: size {height}×{width} is not a multiple of the patch size {patch}")
    pad = -frames % tubelet
    x = mask.float()
    if pad:
        x = torch.cat([x, x[-1:].expand(pad, height, width)])
    pooled = F.avg_pool3d(x[None, None], kernel_size=(tubelet, patch, patch))  # (1, 1, T', H', W')
    return pooled[0, 0]
