"""Tiny presets: each writes a local folder in its library's own format, so that tiny and
real runs load through the same ``from_pretrained`` path.

A model entry of a config is either a folder of real weights or ``tiny``; :func:`resolve`
turns ``tiny`` into a folder, written once under a cache root and reused after.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

from sara.models import sam3, text, vjepa2, wan

TINY: dict[str, Callable[..., Path]] = {
    "sam3": sam3.save_tiny,
    "vjepa2": vjepa2.save_tiny,
    "umt5": text.save_tiny_umt5,
    "qwen3vl": text.save_tiny_qwen3vl,
    "wan": partial(wan.save_tiny_wan, variant="tiny"),
    "wan-a14b": partial(wan.save_tiny_wan, variant="tiny-a14b"),
    "wan-ti2v": partial(wan.save_tiny_wan, variant="tiny-ti2v"),
    "wan-small": partial(wan.save_tiny_wan, variant="small"),
}


def resolve(source: str, name: str, cache_root: str | Path, seed: int = 0) -> Path:
    """``source`` as a weights folder: itself, or for ``tiny`` the tiny ``name`` preset."""
    if source != "tiny":
        return Path(source)
    if name not in TINY:
        raise ValueError(f"no tiny preset {name!r}; choose one of {', '.join(TINY)}")
    folder = Path(cache_root) / f"tiny-{name}-seed{seed}"
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")  # renamed only once complete
        shutil.rmtree(partial, ignore_errors=True)
        TINY[name](partial, seed=seed)
        partial.rename(folder)
    return folder
