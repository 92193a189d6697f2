"""Whether a run's LoRA files give back what it exported: each adapter file (and its
ComfyUI-keyed twin) loaded into a fresh ``WanPipeline`` of the base folder, against the
merged pipeline of the same run, on one fixed input per expert."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanPipeline
from torch import Tensor

from sara.run_dir import RunDir

PATCHES = 4  # latent height and width of the probe input, in DiT patches


@torch.no_grad()
def transformer_outputs(pipe: WanPipeline, seed: int = 0) -> list[Tensor]:
    """Each expert's output on one fixed input: ``[high, low]`` (``[one]`` for one expert)."""
    config = pipe.transformer.config
    _, height, width = config.patch_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, config.in_channels, 3, PATCHES * height, PATCHES * width, generator=g)  # [B, C, T, H, W]
    text = torch.randn(1, 12, config.text_dim, generator=g)  # [B, L, text width]
    dits = [d for d in (pipe.transformer, pipe.transformer_2) if d is not None]
    return [d(x, timestep=torch.tensor([500.0]), encoder_hidden_states=text)[0] for d in dits]


def adapter_files(lora: Path) -> list[list[str]]:
    """The file names of a run's ``lora/`` folder in groups that load together: the diffusers
    files, then their ComfyUI-keyed twins; each group high-noise expert first (``high_noise``
    sorts before ``low_noise``; a one-expert run has ``transformer`` alone)."""
    names = sorted(p.name for p in lora.glob("*.safetensors"))
    comfyui = [n for n in names if n.endswith("_comfyui.safetensors")]
    return [group for group in ([n for n in names if n not in comfyui], comfyui) if group]


def adapter_deviation(run: str | Path, base: str | Path) -> dict[str, float]:
    """``{adapter file: max |output − merged output|}`` over the experts, for each LoRA file
    of ``run`` loaded into ``base`` (the Wan folder it trained from) — 0 up to rounding when
    the files are what the merged export holds."""
    run = RunDir(run)
    merged = transformer_outputs(WanPipeline.from_pretrained(run.pipeline))
    deviation = {}
    for names in adapter_files(run.lora):
        pipe = WanPipeline.from_pretrained(base)
        for name, into_second in zip(names, (False, True)):  # the low-noise file goes into transformer_2
            pipe.load_lora_weights(str(run.lora), weight_name=name, load_into_transformer_2=into_second)
        got = transformer_outputs(pipe)
        deviation[" + ".join(names)] = max((g - m).abs().max().item() for g, m in zip(got, merged))
    return deviation
