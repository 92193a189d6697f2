"""Tiny presets: each writes a local folder in its library's own format, so that tiny and
real runs load through the same ``from_pretrained`` path.

A model entry of a config is a folder of real weights, ``tiny``, or the name of a released
model whose configs ship in ``sara/models/released`` (:data:`RELEASED`: its architecture
without weights, what ``sara stage2 plan`` needs); :func:`resolve` turns ``tiny`` into a
folder, written once under a cache root and reused after, and a released name into its
config-only folder, which :func:`require_weights` refuses to load weights from. The
registry names each preset's writer by module and function: a module is imported only
when its preset is written, so listing the presets (``sara models tiny --help``) imports
no model library.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

# part of every preset's folder name: 2 — tokenizers with chat templates; 3 — the shapes VAE
# trained longer, its entity outlines weighted; 4 — the shapes VAE frame-wise (no clip phase);
# 5 — the medium DiT in two heads of 64 channels; 6 — the shapes umT5 pretrained on the world's
# captions
PRESET_FORMAT = 6
# name -> (module, writer, keyword arguments of the writer)
TINY: dict[str, tuple[str, str, dict]] = {
    "sam3": ("sara.models.sam3", "save_tiny", {}),
    "vjepa2": ("sara.models.vjepa2", "save_tiny", {}),
    "umt5": ("sara.models.text", "save_tiny_umt5", {}),
    "qwen3vl": ("sara.models.text", "save_tiny_qwen3vl", {}),
    "wan": ("sara.models.wan", "save_tiny_wan", {"variant": "tiny"}),
    "wan-a14b": ("sara.models.wan", "save_tiny_wan", {"variant": "tiny-a14b"}),
    "wan-ti2v": ("sara.models.wan", "save_tiny_wan", {"variant": "tiny-ti2v"}),
    "wan-small": ("sara.models.wan", "save_tiny_wan", {"variant": "small"}),
    "wan-medium": ("sara.models.wan", "save_tiny_wan", {"variant": "medium"}),
    "wan-shapes": ("sara.shapes.vae", "save_shapes_wan", {"variant": "medium"}),  # trains its VAE: minutes, once
    "wan-shapes-wide": ("sara.shapes.vae", "save_shapes_wan", {"variant": "wide"}),  # the same VAE (same seed)
    "wan-shapes-fine": ("sara.shapes.vae", "save_shapes_wan", {"variant": "fine"}),  # the same VAE (same seed)
}
# config-only folders of the released models (JSON, no weights), by name
RELEASED_ROOT = Path(__file__).parent / "released"
RELEASED = tuple(sorted(p.name for p in RELEASED_ROOT.iterdir() if p.is_dir()))
# a config's `models.wan` value -> its tiny preset
WAN_VARIANTS = {
    "tiny": "wan",
    "tiny-a14b": "wan-a14b",
    "tiny-ti2v": "wan-ti2v",
    "small": "wan-small",
    "medium": "wan-medium",
    "shapes": "wan-shapes",
    "shapes-wide": "wan-shapes-wide",
    "shapes-fine": "wan-shapes-fine",
}


def write_tiny(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny preset ``name`` into ``out_dir``."""
    if name not in TINY:
        raise ValueError(f"no tiny preset {name!r}; choose one of {', '.join(TINY)}")
    module, writer, kwargs = TINY[name]
    return getattr(importlib.import_module(module), writer)(out_dir, seed=seed, **kwargs)


def resolve(source: str, name: str, cache_root: str | Path, seed: int = 0) -> Path:
    """``source`` as a weights folder: itself, a released model's config-only folder, or for
    ``tiny`` the tiny ``name`` preset."""
    if source in RELEASED:
        return RELEASED_ROOT / source
    if source != "tiny":
        return Path(source)
    if name not in TINY:
        raise ValueError(f"no tiny preset {name!r}; choose one of {', '.join(TINY)}")
    folder = Path(cache_root) / f"tiny-{name}-v{PRESET_FORMAT}-seed{seed}"
    if not folder.is_dir():
        # renamed only once complete; one partial folder per process, as every rank of a
        # distributed run may write the same preset at once (the same bytes: first rename wins)
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        write_tiny(name, partial, seed)
        try:
            partial.rename(folder)
        except OSError:  # another process got there first
            shutil.rmtree(partial)
    return folder


def wan_folder(source: str, tiny_root: str | Path) -> Path:
    """A config's Wan entry as a folder: itself, a released model's config-only folder, or a
    tiny variant (``tiny``, ``tiny-a14b``, ``tiny-ti2v``, ``medium``, ``small``, ``shapes``,
    ``shapes-wide``, ``shapes-fine``) written once under ``tiny_root``."""
    if source in WAN_VARIANTS:
        return resolve("tiny", WAN_VARIANTS[source], tiny_root)
    return resolve(source, "wan", tiny_root)


def require_weights(folder: Path, key: str) -> Path:
    """``folder``, unless it is a released model's config-only copy.

    Raises:
        WeightsError: naming ``key``, the config entry that chose the folder.
    """
    from sara.models.weights import WeightsError  # torch: imported only when weights are about to load

    if folder.resolve().is_relative_to(RELEASED_ROOT.resolve()):
        raise WeightsError(
            f"{key}: {folder.name} holds the released model's configs only (enough for `sara stage2 plan`); "
            "point it at a folder with the downloaded weights"
        )
    return folder
