"""Wan2.2 DiTs as users hold them: single-file checkpoints → the Diffusers folder ``sara`` reads.

ComfyUI's files (keys under ``model.diffusion_model.``) and Wan's original release (the
same names without the prefix) store one DiT per ``.safetensors`` file. Diffusers'
``WanTransformer3DModel.from_single_file`` converts either, given the Diffusers config of
the same model; :func:`wan_from_single_file` takes that config from a Diffusers folder of
the model (``base``), converts the file(s), and writes a Diffusers folder whose other
components (VAE, text encoder, tokenizer, scheduler) are links to ``base``'s: a fine-tune
or merge held as one file becomes a folder every ``sara`` command reads, without copying
the 11 GB text encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from sara.models.weights import WeightsError

EXPERT_FOLDERS = ("transformer", "transformer_2")  # Wan2.2 A14B: high-noise, low-noise expert


def load_single_file(path: Path, base: Path, subfolder: str, dtype: torch.dtype | None) -> WanTransformer3DModel:
    """The DiT of one single-file checkpoint, with the config of ``base/subfolder``."""
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        return WanTransformer3DModel.from_single_file(
            str(path), config=str(base), subfolder=subfolder, torch_dtype=dtype, local_files_only=True
        )
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: not a Wan DiT checkpoint of {base / subfolder}'s shape ({first[:200]})") from None


def wan_from_single_file(
    base: str | Path, out: str | Path, files: list[str | Path], dtype: torch.dtype | None = torch.bfloat16
) -> Path:
    """Write the Diffusers folder ``out``: ``base`` with its DiT(s) replaced by ``files`` —
    one per expert, the high-noise expert first for a two-expert model."""
    base, out = Path(base).resolve(), Path(out)
    index_path = base / "model_index.json"
    if not index_path.is_file():
        raise WeightsError(f"{base}: not a Diffusers Wan folder (no model_index.json)")
    index = json.loads(index_path.read_text())
    experts = [name for name in EXPERT_FOLDERS if index.get(name) and index[name][0] is not None]
    if len(files) != len(experts):
        names = " and ".join(experts)
        raise WeightsError(f"{base}: has {len(experts)} DiT(s) ({names}); give one checkpoint for each, in that order")
    if out.exists():
        raise WeightsError(f"{out}: exists; choose a new folder")
    models = {name: load_single_file(Path(f), base, name, dtype) for name, f in zip(experts, files)}
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, model in models.items():
        model.save_pretrained(staging / name)
    for entry in base.iterdir():
        if entry.name not in models:  # model_index.json and the shared components, linked
            (staging / entry.name).symlink_to(entry)
    staging.rename(out)  # the folder appears whole or not at all
    return out
