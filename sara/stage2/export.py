"""The trained expert(s) written into a copy of the Wan folder, in Diffusers format, and
under LoRA each expert's adapter alone: the file ``WanPipeline.load_lora_weights`` reads
and, on request, the same adapter in ComfyUI's native keys."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from diffusers import WanPipeline, WanTransformer3DModel
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from sara.config.stage2 import EXPORT_DTYPES
from sara.models.wan import HIGH, SUBFOLDER, WanLayout, load_transformers, stored_dtypes
from sara.models.wan_keys import comfyui_lora
from sara.parallel.world import World
from sara.run_dir import RunDir
from sara.stage2.build import FP8
from sara.stage2.objective import Stage2Model

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _link_or_copy(source: str, target: str) -> None:
    """Unchanged weights are hard-linked where the file system allows (a Wan folder is tens of GB)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def copy_folder_without(folder: Path, out: Path, replaced: set[str]) -> Path:
    """``OUT.partial``: a copy of the Diffusers folder ``folder`` without its top-level
    subfolders ``replaced`` (unchanged files hard-linked where allowed), to be filled and then
    put in place by :func:`publish_folder`, so that ``out`` is written whole or not at all."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(
        folder,
        partial,
        ignore=lambda at, names: replaced & set(names) if at == str(folder) else set(),
        copy_function=_link_or_copy,
    )
    return partial


def publish_folder(partial: Path, out: Path) -> Path:
    """``partial`` renamed to ``out``, replacing what was there."""
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def adapter_name(layout: WanLayout, expert: str) -> str:
    """The adapter file's stem: ``high_noise`` / ``low_noise`` for the experts of a
    two-expert model (the names Wan2.2 LoRA files go by), ``transformer`` otherwise."""
    if len(layout.experts) == 1:
        return "transformer"
    return "high_noise" if expert == HIGH else "low_noise"


def export_pipeline(
    model: Stage2Model,
    layout: WanLayout,
    run: RunDir,
    world: World,
    metadata: dict[str, str],
    comfyui: bool = False,
    dtype: str = "released",
) -> Path:
    """``run.pipeline``: the Wan folder with the trained expert(s) in place (atomically). Every rank
    calls it (gathering a sharded expert is collective); rank 0 puts each full state into an
    unsharded copy of the expert — LoRA merged into plain weights — and writes. Under
    LoRA each expert's adapter is also written alone, in ``run.lora``
    (:func:`adapter_name`; ``metadata``, the run's config, in each file's header): the file
    ``WanPipeline.load_lora_weights`` reads (the low-noise expert's with
    ``load_into_transformer_2=True``) and, with ``comfyui``, ``NAME_comfyui.safetensors``.
    ``dtype``: ``released`` writes each merged tensor in the dtype the base folder stores it
    in (the trained fp32 masters rounded to the release's bf16), else that dtype throughout."""
    out = run.pipeline
    if world.is_main:
        partial = copy_folder_without(layout.folder, out, {SUBFOLDER[name] for name in model.experts})
    for name, dit in model.experts.items():  # one expert's full state in memory at a time
        state = get_model_state_dict(dit, options=FULL)
        if world.is_main:
            state = _unquantised(state, layout, name)
            adapter = run.lora / f"{adapter_name(layout, name)}.safetensors"
            dtypes = _export_dtypes(layout, name, dtype)
            _write_expert(dit, state, partial / SUBFOLDER[name], adapter, metadata, comfyui, dtypes)
    if world.is_main:
        publish_folder(partial, out)
    return out


def _export_dtypes(layout: WanLayout, expert: str, dtype: str) -> dict[str, torch.dtype] | torch.dtype:
    """What :func:`export_pipeline` writes an expert's tensors in: each in the base folder's
    dtype (``released``), or one dtype."""
    if dtype == "released":
        return stored_dtypes(layout.folder, SUBFOLDER[expert])
    if dtype in ("float32", "bfloat16"):
        return getattr(torch, dtype)
    raise ValueError(f"export_dtype: {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")


def _write_expert(
    dit: WanTransformer3DModel,
    state: dict,
    folder: Path,
    adapter: Path,
    metadata: dict[str, str],
    comfyui: bool,
    dtypes: dict[str, torch.dtype] | torch.dtype,
) -> None:
    """``state`` put into an unsharded copy of ``dit`` built without memory (meta), then saved
    in Diffusers format, each tensor in ``dtypes`` (by name, else as trained, or one dtype) —
    under LoRA the adapter alone first (in fp32), then merged in."""
    config = getattr(dit, "peft_config", None)
    with torch.device("meta"):
        copy = WanTransformer3DModel.from_config(dit.config)
        if config:
            copy.add_adapter(config["default"])
    copy.load_state_dict(state, assign=True)
    if config:  # the adapter alone, as WanPipeline.load_lora_weights reads it; then merged
        lora = config["default"]
        weights = get_peft_model_state_dict(copy)
        WanPipeline.save_lora_weights(
            adapter.parent,
            transformer_lora_layers=weights,
            weight_name=adapter.name,
            transformer_lora_adapter_metadata=lora.to_dict(),
        )
        _add_metadata(adapter, metadata)
        if comfyui:
            comfy = adapter.with_name(f"{adapter.stem}_comfyui.safetensors")
            save_file(comfyui_lora(weights, lora.lora_alpha), comfy, metadata={"format": "pt", **metadata})
        copy.float()  # merged in fp32 (a frozen base is stored in bf16), then written in `dtypes`
        copy.fuse_lora()
        copy.unload_lora()
    for name, parameter in copy.named_parameters():
        parameter.data = parameter.data.to(dtypes.get(name, parameter.dtype) if isinstance(dtypes, dict) else dtypes)
    copy.save_pretrained(folder)


def _unquantised(state: dict, layout: WanLayout, expert: str) -> dict:
    """``state`` with the frozen weights that ``optim.layerwise_fp8`` stored in fp8 taken
    from the folder instead: the export merges the adapter into the base as released."""
    if not any(v.dtype == FP8 for v in state.values()):
        return state
    original = load_transformers(layout, names=(expert,))[expert].state_dict()
    return {k: original[k.replace(".base_layer", "")] if v.dtype == FP8 else v for k, v in state.items()}


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """``metadata`` joined to the header of the safetensors file ``path`` (rewritten whole)."""
    with safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = handle.metadata() or {}
    save_file(tensors, path, metadata=header | metadata)
