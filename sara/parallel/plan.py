"""``sara stage2 plan``: the memory per GPU of a Stage 2 run, before renting the GPUs.

The DiT expert(s), adapters and projectors are built on the ``meta`` device (no memory, no
weights) from the transformer config of a Diffusers folder or of a known architecture, and
their parameters are counted. Per rank, with FSDP sharding every parameter over
``S = world / dp_replicate`` ranks (the ``dp_shard × ulysses`` group):

- trainable parameters: fp32 master copy ``4·n/S``, fp32 gradients ``4·n/S``, AdamW's two
  moments ``8·n/S``, an EMA ``4·n/S`` when on;
- frozen parameters (the base under LoRA, an expert that does not train is not loaded):
  bf16 ``2·n/S``;
- the all-gather working set: the largest FSDP unit (one Wan block) unsharded in bf16,
  twice (the block that computes and the one prefetched).

Activations are not counted: they depend on the clip shape, gradient checkpointing and
the Ulysses degree, and are what the rest of the GPU is for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig
from torch import nn

from sara.config.stage2 import LORA_TARGETS
from sara.models.wan import SUBFOLDER
from sara.stage2.align import Projector

GIB = 2**30
# Wan2.2's transformer configs as their Diffusers folders declare them (transformer/config.json)
ARCHITECTURES = {
    "wan2.2-ti2v-5b": {
        "experts": 1,
        "transformer": dict(
            patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
            text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        ),
    },
    "wan2.2-t2v-a14b": {
        "experts": 2,
        "transformer": dict(
            patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        ),
    },
}  # fmt: skip


@dataclass(frozen=True)
class PlanSpec:
    model: str  # a name in ARCHITECTURES or a Diffusers-format Wan folder
    experts: int = 1  # experts that train (of a two-expert model)
    lora_rank: int = 0  # 0: full fine-tune
    ema: bool = False
    vfm_dim: int = 1024  # V-JEPA 2 width (ViT-L 1024, ViT-g 1408): the projector's output
    projector_dim: int | None = None  # null: max(DiT, VFM width), as Stage2Model builds it


def _transformer_config(model: str) -> tuple[dict, int]:
    """The transformer config and the number of experts of ``model``."""
    if model in ARCHITECTURES:
        return ARCHITECTURES[model]["transformer"], ARCHITECTURES[model]["experts"]
    folder = Path(model)
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(f"--model: {model} is neither one of {', '.join(ARCHITECTURES)} nor a Wan folder")
    experts = 2 if (json.loads(index.read_text()).get("transformer_2") or [None])[0] else 1
    config = json.loads((folder / SUBFOLDER["high"] / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}, experts


def build_on_meta(spec: PlanSpec) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(experts, projectors)`` that train, on the meta device."""
    config, available = _transformer_config(spec.model)
    if not 1 <= spec.experts <= available:
        raise ValueError(f"--experts: {spec.model} has {available} expert(s); {spec.experts} cannot train")
    with torch.device("meta"):
        experts = [WanTransformer3DModel.from_config(config) for _ in range(spec.experts)]
        width = config["num_attention_heads"] * config["attention_head_dim"]
        projectors = [Projector(width, spec.vfm_dim, spec.projector_dim) for _ in experts]
        if spec.lora_rank:
            lora = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_rank, target_modules=list(LORA_TARGETS))
            for dit in experts:
                dit.requires_grad_(False)
                dit.add_adapter(lora)
    return experts, projectors


def memory_plan(spec: PlanSpec, world: int, replicate: int = 1) -> dict[str, float]:
    """GiB per rank of each part (see the module docstring) for ``world`` ranks."""
    if world % replicate:
        raise ValueError(f"--replicate: {replicate} does not divide the world of {world}")
    experts, projectors = build_on_meta(spec)
    params = [p for m in experts + projectors for p in m.parameters()]
    trained = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    block = max(sum(p.numel() for p in b.parameters()) for dit in experts for b in dit.blocks)
    shards = world // replicate
    parts = {
        "parameters": (4 * trained + 2 * frozen) / shards,
        "gradients": 4 * trained / shards,
        "optimizer": 8 * trained / shards,
        "ema": 4 * trained / shards if spec.ema else 0.0,
        "gathered": 2 * 2 * block,
    }
    return {"trained_b": trained / 1e9, "frozen_b": frozen / 1e9} | {k: v / GIB for k, v in parts.items()}


def format_plan(spec: PlanSpec, worlds: list[int], replicate: int = 1) -> str:
    rows = {world: memory_plan(spec, world, replicate) for world in worlds}
    first = next(iter(rows.values()))
    what = f"LoRA rank {spec.lora_rank}" if spec.lora_rank else "full fine-tune"
    lines = [
        f"{spec.model}: {spec.experts} expert(s) training, {what}, EMA {'on' if spec.ema else 'off'}; "
        f"{first['trained_b']:.2f} B trained + {first['frozen_b']:.2f} B frozen parameters",
        f"{'GPUs':>5} | {'params':>7} {'grads':>7} {'AdamW':>7} {'EMA':>7} {'gather':>7} | {'GiB/GPU':>8}",
        "-" * 61,
    ]
    for world, row in rows.items():
        parts = [row[k] for k in ("parameters", "gradients", "optimizer", "ema", "gathered")]
        lines.append(f"{world:>5} | " + " ".join(f"{v:>7.2f}" for v in parts) + f" | {sum(parts):>8.2f}")
    lines.append("per rank, before activations; FSDP shards over dp_shard × ulysses")
    return "\n".join(lines)
