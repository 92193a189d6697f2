"""What a Stage 2 run is made of, resolved once: the Wan folder's layout, the teacher's
view, the clip shapes — and the model built from them (experts, adapters, projectors)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from peft import LoraConfig

from sara.config.stage2 import Stage2Config
from sara.data.buckets import Bucket
from sara.models.presets import wan_folder
from sara.models.wan import SUBFOLDER, WanLayout, load_transformers, read_layout
from sara.stage2.align import VfmView
from sara.stage2.encoders import buckets, teacher
from sara.stage2.objective import Stage2Model


@dataclass(frozen=True)
class Stage2Setup:
    layout: WanLayout  # the Wan folder: experts, boundary, VAE factors
    vfm_dim: int  # V-JEPA 2 width
    view: VfmView  # how V-JEPA 2 sees a clip
    buckets: list[Bucket]  # the clip shapes


def resolve_setup(config: Stage2Config) -> Stage2Setup:
    """Read the folders and check the clip shapes against them, once per run."""
    vfm_dim, view = teacher(config)
    return Stage2Setup(
        read_layout(wan_folder(config.models.wan, config.models.tiny_root)), vfm_dim, view, buckets(config)
    )


def trained_experts(config: Stage2Config, layout: WanLayout) -> tuple[str, ...]:
    names = tuple(n for n in layout.experts if len(layout.experts) == 1 or n in config.objective.experts)
    if not names:
        raise ValueError(f"objective.experts: {config.objective.experts} names none of {', '.join(layout.experts)}")
    return names


FP8 = torch.float8_e4m3fn  # the storage of optim.layerwise_fp8


def build_model(
    config: Stage2Config, setup: Stage2Setup, meta: bool = False, frozen_dtype: torch.dtype = torch.float32
) -> Stage2Model:
    """The trainable experts of the folder, their adapters and projectors, on the CPU with
    the folder's weights — or, with ``meta``, the same modules on the meta device, without
    memory or weights (what ranks other than 0 build; :mod:`sara.parallel.load` fills
    their shards). Frozen parameters (the base under LoRA) are kept in ``frozen_dtype``."""
    names = trained_experts(config, setup.layout)
    if config.optim.layerwise_fp8 and (not config.optim.lora_rank or meta):
        raise ValueError(
            "optim.layerwise_fp8: stores the frozen base of a LoRA run in one process; "
            f"needs optim.lora_rank > 0 (is {config.optim.lora_rank}) and no sharding"
        )
    with torch.device("meta") if meta else contextlib.nullcontext():
        if meta:
            experts = {
                n: WanTransformer3DModel.from_config(
                    WanTransformer3DModel.load_config(setup.layout.folder, subfolder=SUBFOLDER[n])
                )
                for n in names
            }
        else:
            experts = load_transformers(setup.layout, names=names)
        if config.optim.lora_rank:
            for dit in experts.values():
                dit.requires_grad_(False)  # the adapters alone train; the projectors stay fully trainable
                dit.add_adapter(lora_config(config))
        model = Stage2Model(experts, setup.layout, config.objective, setup.vfm_dim, setup.view)
    for parameter in model.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(frozen_dtype)
    if config.optim.layerwise_fp8:  # frozen Linear weights stored in fp8, cast to frozen_dtype per layer as it runs
        skip = (*DEFAULT_SKIP_MODULES_PATTERN, "lora_")  # the adapters train in full precision
        for dit in model.experts.values():
            dit.enable_layerwise_casting(FP8, compute_dtype=frozen_dtype, skip_modules_pattern=skip)
    if config.optim.gradient_checkpointing:
        for dit in model.experts.values():
            dit.enable_gradient_checkpointing()
    return model


def lora_config(config: Stage2Config) -> LoraConfig:
    optim = config.optim
    return LoraConfig(
        r=optim.lora_rank,
        lora_alpha=optim.lora_alpha or optim.lora_rank,
        target_modules=list(optim.lora_targets),
        init_lora_weights=True,
    )
