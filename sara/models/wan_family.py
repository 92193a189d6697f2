"""Wan2.2's official sampling settings, per released model, and which model a folder holds.

The settings come from the official repository (``Wan-Video/Wan2.2``: ``wan/configs/
shared_config.py``, ``wan_t2v_A14B.py``, ``wan_ti2v_5B.py``, sizes from ``SUPPORTED_SIZES``,
written there as width*height). They are not all in a Diffusers folder: the A14B folder's
scheduler says ``flow_shift`` 3.0 where Wan samples at 12.0, and nothing in a folder holds
the frame rate, the guidance of each expert or the negative prompt. A folder is recognised
by its DiT's architecture, compared with the config-only copy of each release in
``sara/models/released`` (so a fine-tuned copy, ``RUN_DIR/pipeline``, is recognised too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sara.models.presets import RELEASED_ROOT

# Wan's default negative prompt (shared_config.sample_neg_prompt), what its generate.py sends
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class Family:
    """How the official code samples one released model."""

    frames: int  # 4k + 1
    height: int  # pixels (the default size of the official generate.py)
    width: int
    fps: float  # of the written video, and of the motion the model learnt
    steps: int  # UniPC steps
    shift: float  # the sampler's flow shift
    guidance: float  # classifier-free guidance of the (high-noise) expert
    guidance_2: float | None  # of the low-noise expert of a two-expert model
    negative_prompt: str = WAN_NEGATIVE_PROMPT


FAMILIES = {
    # sample_guide_scale = (3.0, 4.0): (low noise, high noise); diffusers' transformer is the high-noise expert
    "wan2.2-t2v-a14b": Family(frames=81, height=720, width=1280, fps=16, steps=40, shift=12.0, guidance=4.0,
                              guidance_2=3.0),
    "wan2.2-ti2v-5b": Family(frames=121, height=704, width=1280, fps=24, steps=50, shift=5.0, guidance=5.0,
                             guidance_2=None),
}  # fmt: skip
# what tells the releases apart (and from any tiny preset)
ARCHITECTURE = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "ffn_dim")


def _signature(folder: Path) -> tuple:
    """The DiT architecture and the pipeline's variant (experts, per-token timesteps) of a folder."""
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    index = json.loads((folder / "model_index.json").read_text())
    experts = 2 if (index.get("transformer_2") or [None])[0] else 1
    return (*(transformer.get(key) for key in ARCHITECTURE), experts, bool(index.get("expand_timesteps")))


def family_of(folder: str | Path) -> Family | None:
    """The official settings of the release a Diffusers-format Wan folder holds (or was
    fine-tuned from); ``None`` for any other Wan folder (the tiny presets among them)."""
    signature = _signature(Path(folder))
    for name, family in FAMILIES.items():
        if _signature(RELEASED_ROOT / name) == signature:
            return family
    return None


def folder_shift(folder: str | Path) -> float | None:
    """The flow shift a folder's scheduler config holds (``flow_shift`` or ``shift``), if any."""
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return config.get("flow_shift", config.get("shift"))
