"""Typed configs shared across commands. Each field's comment says what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field

from sara.config.clips import ClipTiming
from sara.config.loader import option
from sara.config.stage1 import Stage1Config, Stage1DataConfig, Stage1ModelsConfig
from sara.config.stage2 import Stage2Config, Stage2DataConfig, Stage2ModelsConfig, Stage2OptimConfig

# the shapes world's words, from above config on purpose: SynthConfig's choices and defaults are its
# words, kinds of pairs and backgrounds; that module imports nothing of sara, so nothing above comes with it
from sara.shapes.vocabulary import BACKGROUNDS, COLOURS, MOTIONS, PAIRS, SHAPES, TEXTURED


@dataclass
class TRDConfig:
    """The demo's check of the TRD loss, dense against blockwise, under every routing (the
    term Stage 2 trains with is ``stage2.objective.align``)."""

    margin: float = option(0.1, ge=0)  # |S_p − S_y| below this is not penalised
    chunk_size: int | None = option(None, ge=1)  # row block of the exact blockwise path; null = auto


@dataclass
class BudgetConfig:
    """The generated saliency example whose pair budget the demo reports."""

    grid: list[int] = option([8, 16, 16], ge=1)  # V-JEPA token grid (T/tubelet, H/patch, W/patch)
    fg_fraction: float = option(0.48, gt=0, lt=1)  # share of tokens above the threshold
    threshold: float = option(0.5, ge=0, le=1)  # a token is foreground when saliency > threshold
    feature_dim: int = option(256, ge=1)  # width of the random features of the loss check


@dataclass
class SynthConfig:
    """The synthetic shapes world the demo writes."""

    num: int = option(24, ge=1)  # clips
    frames: int = option(17, ge=1)  # per clip
    size: int = option(128, ge=16)  # square frames, pixels
    fg_fraction: float = option(0.5, gt=0, lt=1)  # mean FG share of the token grid
    min_visible: float = option(0.5, ge=0, le=1)  # least share of its area each entity shows in every frame
    heldout_fraction: float = option(0.2, ge=0, lt=1)  # clips in heldout.jsonl
    pairs: str = option("all", choices=PAIRS)  # colour–shape pairs: all, seen (never the unseen ones), unseen
    backgrounds: list[str] = option(list(TEXTURED), choices=BACKGROUNDS)  # the kinds drawn from
    kinds: list[str] = option(list(SHAPES), choices=SHAPES)  # shape kinds the named entities take
    colours: list[str] = option(list(COLOURS), choices=tuple(COLOURS))  # and colours
    motions: list[str] = option(list(MOTIONS), choices=tuple(MOTIONS))  # and directions
    min_entities: int = option(1, ge=1)  # named shapes per clip, at least
    max_entities: int = option(3, ge=1)  # and at most
    spin: float = option(0.05, ge=0)  # largest turn of a shape per frame, radians
    upright: bool = False  # every shape starts at angle 0
    entity_share: float = option(0.0, ge=0, lt=1)  # > 0: each named shape covers this share of the frame
    distractors: int = option(0, ge=0)  # unnamed shapes in clutter colours, behind the named ones


@dataclass
class GridConfig(ClipTiming):
    """How the video encoder (V-JEPA 2) sees a clip, hence its token grid."""

    frames: int = option(16, ge=1)  # frames sampled from the clip
    size: int = option(128, ge=16)  # square input size, pixels
    tubelet: int = option(2, ge=1)  # frames per token
    patch: int = option(16, ge=1)  # pixels per token side


@dataclass
class DemoConfig:
    """``sara demo``: every stage end to end on tiny presets and generated data."""

    out_dir: str = "outputs/demo"  # run folder: resolved config, figures, report.html
    seed: int = 0  # seeds every random choice of the demo
    data: SynthConfig = field(default_factory=SynthConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    trd: TRDConfig = field(default_factory=TRDConfig)
    stage1_world: SynthConfig = field(  # the larger world the aligner learns from
        default_factory=lambda: SynthConfig(num=600, frames=16, size=128, heldout_fraction=0.1, pairs="seen")
    )
    stage1: Stage1Config = field(default_factory=lambda: _demo_stage1())
    stage2_world: SynthConfig = field(  # 4k + 1-frame clips for the DiT (Wan's causal VAE)
        default_factory=lambda: SynthConfig(num=200, frames=17, size=128, heldout_fraction=0.1, pairs="seen")
    )
    stage2: Stage2Config = field(default_factory=lambda: _demo_stage2())
    generate_steps: int = option(20, ge=1)  # denoising steps of the demo's videos
    eval_prompts: int = option(16, ge=2)  # held-out prompts of unseen pairs the demo generates and scores
    bench_steps: int = option(10, ge=1)  # timed steps per case of the demo's `sara bench step`
    lora_steps: int = option(40, ge=1)  # steps of the demo's LoRA run (adapter files, tracker, densities)


def _demo_stage2() -> Stage2Config:
    """Stage 2 on the demo's 17-frame world, saliency from the demo's Stage 1 run."""
    return Stage2Config(
        out_dir="${out_dir}/stage2",
        data=Stage2DataConfig(train="${out_dir}/shapes17/train.jsonl"),
        models=Stage2ModelsConfig(wan="shapes", aligner="${out_dir}/stage1", tiny_root="${out_dir}/models"),
        optim=Stage2OptimConfig(steps=900, batch_size=4, lr=1e-3),  # the medium DiT learns at 1e-3
        log_every=20,
        save_every=500,
    )


def _demo_stage1() -> Stage1Config:
    """Stage 1 with every path inside the demo's folder (``${out_dir}`` is the demo's)."""
    return Stage1Config(
        out_dir="${out_dir}/stage1",
        data=Stage1DataConfig(train="${out_dir}/shapes/train.jsonl", heldout="${out_dir}/shapes/heldout.jsonl"),
        models=Stage1ModelsConfig(tiny_root="${out_dir}/models"),
    )
