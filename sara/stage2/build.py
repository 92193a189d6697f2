"""What a Stage 2 run is made of, resolved once: the Wan folder's layout, the teacher's
view, the clip shapes — and the model built from them (experts, adapters, projectors)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from peft import LoraConfig

from sara.config.stage2 import Stage2Config
from sara.data.buckets import Bucket
from sara.losses.alignment import get_alignment
from sara.models.motion import MOTION_HEAD, MotionHead, load_motion_head
from sara.models.presets import require_weights, wan_folder
from sara.models.wan import SUBFOLDER, WanLayout, keeps_fp32, load_transformers, read_layout, released_dtype
from sara.run_dir import RunDir
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
    """Read the folders' configs (no weights) and check the clip shapes against them, once per run."""
    vfm_dim, view = teacher(config)
    layout = read_layout(wan_folder(config.models.wan, config.models.tiny_root))
    return Stage2Setup(layout, vfm_dim, view, buckets(config, layout))


def cache_dir(config: Stage2Config) -> Path:
    return Path(config.precompute.cache_dir or RunDir(config.out_dir).cache)


def motion_head_folder(config: Stage2Config) -> Path:
    """Where MoAlign's fitted motion head is: ``align.motion.head``, or beside the cache it was fitted on."""
    return Path(config.objective.align.motion.head or cache_dir(config) / MOTION_HEAD)


def motion_head(config: Stage2Config, setup: Stage2Setup, meta: bool) -> MotionHead | None:
    """The frozen motion head of an objective that aligns to it (``None`` for the others): read
    from its folder, or on ``meta`` built from the config's widths (its weights come later)."""
    if not get_alignment(config.objective.align.mode).motion:
        return None
    motion = config.objective.align.motion
    if meta:
        with torch.device("meta"):
            return MotionHead(setup.vfm_dim, motion.dim, motion.hidden).requires_grad_(False)
    head = load_motion_head(motion_head_folder(config))
    expected = {"teacher_dim": setup.vfm_dim, "dim": motion.dim, "hidden": motion.hidden}
    found = {k: head.widths[k] for k in expected}
    if found != expected:
        raise ValueError(
            f"align.motion: the head in {motion_head_folder(config)} has widths {found}, the run {expected}"
        )
    return head


def trained_experts(config: Stage2Config, layout: WanLayout) -> tuple[str, ...]:
    names = tuple(n for n in layout.experts if len(layout.experts) == 1 or n in config.objective.experts)
    if not names:
        raise ValueError(f"objective.experts: {config.objective.experts} names none of {', '.join(layout.experts)}")
    return names


FP8 = torch.float8_e4m3fn  # the storage of optim.layerwise_fp8


def build_model(
    config: Stage2Config,
    setup: Stage2Setup,
    meta: bool = False,
    compute_dtype: torch.dtype = torch.float32,
    masters: bool = True,
) -> Stage2Model:
    """The trainable experts of the folder, their adapters and projectors, on the CPU with
    the folder's weights — or, with ``meta``, the same modules on the meta device, without
    memory or weights (what ranks other than 0 build; :mod:`sara.parallel.load` fills
    their shards).

    Dtypes: frozen parameters (the base under LoRA) are read from the folder straight in
    ``compute_dtype``, except those diffusers keeps in fp32 (norms, modulation tables, the
    time embedder); trained parameters are fp32 masters. With ``masters=False`` (rank 0's
    copy that fills the shards) trained weights the folder provides stay as released (bf16
    for Wan2.2: half of fp32, and each rank's fp32 shard takes them exactly)."""
    names = trained_experts(config, setup.layout)
    lora = config.optim.lora_rank > 0
    if config.optim.layerwise_fp8 and not lora:  # one process only: sara.stage2.plan refuses it sharded
        raise ValueError(
            f"optim.layerwise_fp8: stores the frozen base of a LoRA run; needs optim.lora_rank > 0 (is {config.optim.lora_rank})"
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
            require_weights(setup.layout.folder, "models.wan")
            dtype = compute_dtype if lora else released_dtype(setup.layout.folder, SUBFOLDER[names[0]])
            experts = load_transformers(setup.layout, dtype=dtype, names=names)
        if lora:
            for dit in experts.values():
                dit.requires_grad_(False)  # the adapters alone train; the projectors stay fully trainable
                dit.add_adapter(lora_config(config))
        model = Stage2Model(
            experts, setup.layout, config.objective, setup.vfm_dim, setup.view, motion_head(config, setup, meta)
        )
    set_dtypes(model, compute_dtype, masters)
    if config.optim.layerwise_fp8:  # frozen Linear weights stored in fp8, cast to compute_dtype per layer as it runs
        skip = (*DEFAULT_SKIP_MODULES_PATTERN, "lora_")  # the adapters train in full precision
        for dit in model.experts.values():
            dit.enable_layerwise_casting(FP8, compute_dtype=compute_dtype, skip_modules_pattern=skip)
    if config.optim.gradient_checkpointing:
        for dit in model.experts.values():
            dit.enable_gradient_checkpointing()
    return model


def set_dtypes(model: Stage2Model, compute_dtype: torch.dtype, masters: bool = True) -> Stage2Model:
    """Frozen parameters in ``compute_dtype`` (those diffusers keeps in fp32 in fp32); trained
    ones in fp32 — with ``masters=False`` only those the run creates (adapters, projectors),
    the trained weights of the folder staying as loaded. In place; returns ``model``."""
    dit = next(iter(model.experts.values()))
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(torch.float32 if keeps_fp32(dit, name) else compute_dtype)
        elif masters or "lora_" in name or not name.startswith("experts."):
            parameter.data = parameter.data.to(torch.float32)
    return model


def lora_config(config: Stage2Config) -> LoraConfig:
    optim = config.optim
    return LoraConfig(
        r=optim.lora_rank,
        lora_alpha=optim.lora_alpha or optim.lora_rank,
        target_modules=list(optim.lora_targets),
        init_lora_weights=True,
    )
