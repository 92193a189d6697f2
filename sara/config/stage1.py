"""Typed config of Stage 1 (`sara stage1 train|eval|infer`). Each field's comment says what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field

from sara.config.clips import ClipTiming
from sara.config.loader import option
from sara.config.parallel import ParallelConfig
from sara.config.tracking import LoggingConfig

CAPTION_ENCODER_KINDS = ("umt5", "qwen3vl")
EMBEDDER_INSTRUCTION = "Represent the user's input."  # Qwen3-VL-Embedding's default system turn


@dataclass(frozen=True)
class AlignerSize:
    dim: int  # width of the fusion blocks
    depth: int  # fusion blocks
    heads: int  # attention heads
    self_attention: bool  # visual tokens also attend to each other
    mlp_ratio: float = 4.0


ALIGNER_SIZES = {
    "tiny": AlignerSize(dim=128, depth=2, heads=4, self_attention=False),
    "base": AlignerSize(dim=768, depth=4, heads=12, self_attention=True),
}


@dataclass
class Stage1DataConfig(ClipTiming):
    train: str = "outputs/shapes/train.jsonl"  # manifest with entity masks
    heldout: str = "outputs/shapes/heldout.jsonl"  # manifest for evaluation
    frames: int = option(16, ge=1)  # frames V-JEPA 2 sees per clip (Stage 2: its V-JEPA frames at fps / stride)
    size: int = option(128, ge=16)  # input height in pixels (and width, unless width is set)
    width: int | None = option(None, ge=16)  # input width in pixels; null: size (square)
    max_bad_fraction: float = option(0.05, ge=0, le=1)  # abort past this share of unreadable samples
    num_workers: int = option(0, ge=0)  # decoding processes while features are computed
    caption_samples: bool = True  # also (clip, full caption) → union of its entity masks: what Stage 2 asks

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of V-JEPA 2's input."""
        return self.size, self.width or self.size


@dataclass
class Stage1ModelsConfig:
    vjepa2: str = "tiny"  # V-JEPA 2 weights folder, or tiny
    caption_encoder: str = "tiny"  # umT5 encoder (or Qwen3-VL) folder, or tiny: the tokens cross-attention reads
    caption_encoder_kind: str = option("umt5", choices=CAPTION_ENCODER_KINDS)
    embedder: str = "tiny"  # Qwen3-VL-Embedding folder, or tiny: targets of the InfoNCE term
    embedder_instruction: str = EMBEDDER_INSTRUCTION  # the embedder's system turn for captions
    tiny_root: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/models"  # where tiny presets are written once
    aligner: str = option("tiny", choices=tuple(ALIGNER_SIZES))  # aligner size


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
    log_every: int = option(20, ge=1)  # steps between log lines and tracker points
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # tracker: tensorboard | wandb | none
    eval_every: int = option(100, ge=1)  # steps between held-out evaluations
    save_every: int = option(100, ge=1)  # steps between checkpoints (and one at the end)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # under torchrun: data parallel (ulysses 1)
