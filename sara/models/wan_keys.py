"""Wan DiT weight names: Diffusers' and those of Wan's original release (which ComfyUI uses).

Diffusers converts original checkpoints and LoRA files to its names when it loads them
(``from_single_file``, ``load_lora_weights``); ``sara`` writes Diffusers files and, on
request, LoRA files in ComfyUI's native keys, which need the way back.
"""

from __future__ import annotations

from torch import Tensor

COMFYUI_PREFIX = "diffusion_model."  # ComfyUI's LoRA files
COMFYUI_DIT_PREFIX = "model.diffusion_model."  # ComfyUI's single-file DiTs
# Diffusers names → original names, applied in order (substrings of a weight's name)
ORIGINAL_NAMES = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".to_out.0.", ".o."),
    (".norm2.", ".norm3."),  # the cross-attention norm: Diffusers' norm2 is the original norm3
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def original_name(key: str) -> str:
    """The original name of a Diffusers weight name (``blocks.0.attn1.to_q.weight`` →
    ``blocks.0.self_attn.q.weight``)."""
    if key == "scale_shift_table":  # the output head's modulation; a block's is "modulation"
        return "head.modulation"
    key = key.replace("scale_shift_table", "modulation")
    for diffusers, original in ORIGINAL_NAMES:
        key = key.replace(diffusers, original)
    return key


def original_state(state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """A Diffusers DiT state under its original names, each with ``prefix`` (ComfyUI's
    single files: ``model.diffusion_model.``; Wan's release: none)."""
    return {prefix + original_name(key): value.contiguous() for key, value in state.items()}


def comfyui_lora(adapter: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """A peft adapter of a Wan DiT (``blocks.0.attn1.to_q.lora_A.weight``, …) in ComfyUI's
    keys: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight``, ``….lora_B.weight`` and
    ``….alpha`` per module (the scale is ``alpha / rank``, as peft's ``lora_alpha``)."""
    out: dict[str, Tensor] = {}
    for key, value in adapter.items():
        module, _, leaf = key.partition(".lora_")
        name = COMFYUI_PREFIX + original_name(module + ".")[:-1]
        out[f"{name}.lora_{leaf}"] = value.contiguous()
        out.setdefault(f"{name}.alpha", value.new_tensor(float(alpha)))
    return out
