"""The trained expert(s) written into a copy of the Wan folder, in Diffusers format."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from diffusers import WanPipeline, WanTransformer3DModel
from peft.utils import get_peft_model_state_dict
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from sara.models.wan import SUBFOLDER, WanLayout
from sara.parallel.world import World
from sara.stage2.objective import Stage2Model

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _link_or_copy(source: str, target: str) -> None:
    """Unchanged weights are hard-linked where the file system allows (a Wan folder is tens of GB)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def export_pipeline(model: Stage2Model, layout: WanLayout, out: Path, world: World) -> Path:
    """``out``: the Wan folder with the trained expert(s) in place (atomically). Every rank
    calls it (gathering a sharded expert is collective); rank 0 puts each full state into an
    unsharded copy of the expert — LoRA merged into plain weights — and writes. Under
    LoRA each expert's adapter is also written alone, beside ``out``:
    ``lora/transformer.safetensors`` (and ``lora/transformer_2.safetensors``), the files
    ``WanPipeline.load_lora_weights`` reads."""
    partial = out.with_name(out.name + ".partial")
    if world.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        trained = {SUBFOLDER[name] for name in model.experts}
        shutil.copytree(
            layout.folder,
            partial,
            ignore=lambda folder, names: trained & set(names) if folder == str(layout.folder) else set(),
            copy_function=_link_or_copy,
        )
    for name, dit in model.experts.items():  # one expert's full state in memory at a time
        state = get_model_state_dict(dit, options=FULL)
        if world.is_main:
            _write_expert(dit, state, partial / SUBFOLDER[name], out.parent / "lora" / f"{SUBFOLDER[name]}.safetensors")
    if world.is_main:
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    return out


def _write_expert(dit: WanTransformer3DModel, state: dict, folder: Path, adapter: Path) -> None:
    """``state`` put into an unsharded copy of ``dit`` built without memory (meta), then saved
    in Diffusers format — under LoRA the adapter alone first, then merged in."""
    config = getattr(dit, "peft_config", None)
    with torch.device("meta"):
        copy = WanTransformer3DModel.from_config(dit.config)
        if config:
            copy.add_adapter(config["default"])
    copy.load_state_dict(state, assign=True)
    if config:  # the adapter alone, as WanPipeline.load_lora_weights reads it; then merged
        WanPipeline.save_lora_weights(
            adapter.parent,
            transformer_lora_layers=get_peft_model_state_dict(copy),
            weight_name=adapter.name,
            transformer_lora_adapter_metadata=config["default"].to_dict(),
        )
        copy.fuse_lora()
        copy.unload_lora()
    copy.save_pretrained(folder)
