"""Local weight folders: the one place real presets come from (there is no hub at run time)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


class WeightsError(ValueError):
    """A weights folder that is missing or is not in the expected format."""


def weights_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder in Hugging Face format (it has a ``config.json``), or a one-line error."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: not a {what} weights folder (no config.json)")
    return folder


PREPROCESSOR = "preprocessor_config.json"  # where a folder keeps its pixel mean and std


def write_normalisation(folder: str | Path, mean: list[float], std: list[float]) -> None:
    """Record a tiny preset's pixel mean and std as its real counterpart's folder does."""
    (Path(folder) / PREPROCESSOR).write_text(json.dumps({"image_mean": mean, "image_std": std}, indent=2))


def read_normalisation(folder: Path, mean: list[float], std: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel pixel ``(mean, std)``, shape ``(3,)``: the folder's, else the given defaults."""
    path = folder / PREPROCESSOR
    found = json.loads(path.read_text()) if path.is_file() else {}
    return torch.tensor(found.get("image_mean", mean)), torch.tensor(found.get("image_std", std))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from torch's global RNG seeded with ``seed`` inside the block, and give the caller
    back the stream it had: building a preset never changes the caller's random numbers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
