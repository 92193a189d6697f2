"""Typed config of Stage 1 (`sara stage1 train|eval|infer`). Each field's comment says what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field

from sara.config.loader import option
from sara.models import CAPTION_ENCODER_KINDS
from sara.models.aligner import SIZES


@dataclass
class Stage1DataConfig:
    train: str = "outputs/shapes/train.jsonl"  # manifest with entity masks
    heldout: str = "outputs/shapes/heldout.jsonl"  # manifest for evaluation
    frames: int = option(16, ge=1)  # frames V-JEPA 2 sees per clip
    size: int = option(128, ge=16)  # square input size, pixels
    max_bad_fraction: float = option(0.05, ge=0, le=1)  # abort past this share of unreadable samples
    num_workers: int = option(0, ge=0)  # decoding processes while features are computed
    caption_samples: bool = True  # also (clip, full caption) → union of its entity masks: what Stage 2 asks


@dataclass
class Stage1ModelsConfig:
    vjepa2: str = "tiny"  # V-JEPA 2 weights folder, or tiny
    caption_encoder: str = "tiny"  # umT5 encoder (or Qwen3-VL) folder, or tiny: the tokens cross-attention reads
    caption_encoder_kind: str = option("umt5", choices=CAPTION_ENCODER_KINDS)
    embedder: str = "tiny"  # Qwen3-VL-Embedding folder, or tiny: targets of the InfoNCE term
    tiny_root: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/models"  # where tiny presets are written once
    aligner: str = option("tiny", choices=tuple(SIZES))  # aligner size


@dataclass
class Stage1LossConfig:
    bce: float = option(1.0, ge=0)  # weight of the saliency BCE
    dice: float = option(1.0, ge=0)  # weight of the saliency Dice loss
    infonce: float = option(0.1, ge=0)  # weight of the global head's InfoNCE


@dataclass
class Stage1OptimConfig:
    steps: int = option(200, ge=1)  # optimizer steps in all
    batch_size: int = option(32, ge=2)  # samples (clip, entity) per step; InfoNCE needs ≥ 2
    lr: float = option(1e-3, gt=0)  # peak learning rate (AdamW)
    weight_decay: float = option(0.01, ge=0)
    warmup_steps: int = option(20, ge=0)  # linear warm-up, then cosine decay to zero
    grad_clip: float = option(1.0, gt=0)  # max global gradient norm


@dataclass
class Stage1Config:
    """``sara stage1 train``: the Semantic Aligner on frozen V-JEPA 2 features."""

    out_dir: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/stage1/tiny"  # run folder: config, checkpoints, logs
    seed: int = 0  # model init and data order
    device: str = "auto"  # auto: cuda when available, else cpu
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    models: Stage1ModelsConfig = field(default_factory=Stage1ModelsConfig)
    loss: Stage1LossConfig = field(default_factory=Stage1LossConfig)
    optim: Stage1OptimConfig = field(default_factory=Stage1OptimConfig)
    cache_dir: str | None = None  # V-JEPA tokens per clip; null: <out_dir>/cache
    log_every: int = option(20, ge=1)  # steps between log lines and TensorBoard points
    eval_every: int = option(100, ge=1)  # steps between held-out evaluations
    save_every: int = option(100, ge=1)  # steps between checkpoints (and one at the end)
