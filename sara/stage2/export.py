"""The trained expert(s) written into a copy of the Wan folder, in Diffusers format."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diffusers import WanPipeline
from peft.utils import get_peft_model_state_dict
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from sara.models.wan import SUBFOLDER, WanLayout, load_transformers
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
    calls it (gathering a sharded expert is collective); rank 0 loads each full state into
    an unsharded copy of the expert — LoRA merged into plain weights — and writes. Under
    LoRA each expert's adapter is also written alone, beside ``out``:
    ``lora/transformer.safetensors`` (and ``lora/transformer_2.safetensors``), the files
    ``WanPipeline.load_lora_weights`` reads."""
    states = {name: get_model_state_dict(dit, options=FULL) for name, dit in model.experts.items()}
    if not world.is_main:
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trained = {SUBFOLDER[name] for name in model.experts}
    shutil.copytree(
        layout.folder,
        partial,
        ignore=lambda folder, names: trained & set(names) if folder == str(layout.folder) else set(),
        copy_function=_link_or_copy,
    )
    copies = load_transformers(layout, names=tuple(model.experts))
    for name, dit in copies.items():
        if config := getattr(model.experts[name], "peft_config", None):
            dit.add_adapter(config["default"])
        dit.load_state_dict(states[name])
        if config:  # the adapter alone, as WanPipeline.load_lora_weights reads it; then merged
            WanPipeline.save_lora_weights(
                out.parent / "lora",
                transformer_lora_layers=get_peft_model_state_dict(dit),
                weight_name=f"{SUBFOLDER[name]}.safetensors",
                transformer_lora_adapter_metadata=config["default"].to_dict(),
            )
            dit.fuse_lora()
            dit.unload_lora()
        dit.save_pretrained(partial / SUBFOLDER[name])
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
