"""Typed config of the toy reproduction (`sara repro base`, `sara repro study`). Each field's
comment says what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sara.config.loader import option
from sara.config.schema import SynthConfig
from sara.config.stage2 import TEACHERS, Stage2Config, Stage2DataConfig, Stage2ModelsConfig, Stage2OptimConfig

# arm name -> (objective.align.mode, objective.align.routing)
ARMS = {
    "sft": ("sft", "or"),
    "trd": ("trd", "or"),  # VideoREPA: every pair
    "moalign": ("moalign", "or"),  # MoAlign: relations of the teacher's motion subspace, no text
    "sara": ("sara", "or"),
    "sara-and": ("sara", "and"),
    "sara-xor": ("sara", "xor"),
}


# the study world, where the base learns to draw: one named shape a clip over a plain
# background, of one size per kind, upright, not turning, 9 frames at 96² (3 latent frames);
# shapes of 15 % of the frame, as smaller ones the shapes VAE blurs (docs/DATA.md); three
# kinds whose outlines differ most, four colours (eight seen pairs), the four straight
# directions. With two named shapes, or the whole vocabulary, a DiT trained for the hour drew
# blobs of the right colours and count, kinds and directions near chance (docs/RESULTS.md);
# a few held-out clips are its in-distribution prompts (seen pairs, new layouts and motions)
STUDY_WORLD = {
    "num": 1100, "frames": 9, "size": 96, "heldout_fraction": 0.0291, "pairs": "seen", "backgrounds": ["plain"],
    "min_entities": 1, "max_entities": 1, "spin": 0.0, "upright": True, "entity_share": 0.15, "min_visible": 0.6,
    "kinds": ["circle", "triangle", "cross"], "colours": ["red", "green", "blue", "yellow"],
    "motions": ["left to right", "right to left", "top to bottom", "bottom to top"],
}  # fmt: skip


def _base_stage2() -> Stage2Config:
    """Pretraining of the base: flow matching alone, a large cosine-decayed lr and an EMA
    (exported), captions dropped at Wan's rate so that guidance works."""
    config = Stage2Config(
        data=Stage2DataConfig(frames=9, size=96, caption_dropout=0.1),
        models=Stage2ModelsConfig(wan="shapes", aligner=None, text_length=128, tiny_root="${out_dir}/models"),
        optim=Stage2OptimConfig(
            steps=20000, batch_size=8, lr=1e-3, lr_decay="cosine", warmup_steps=50, ema_decay=0.995
        ),
        log_every=100,
        save_every=1000,
    )
    config.objective.align.mode = "sft"
    return config


# the continual world: the study world's clips, one named shape in its words, with one unnamed
# distractor in a clutter colour the metric does not score, so routing matters: the distractor's
# tokens are background to the saliency, and TRD on every pair also aligns its relations. Not two
# named shapes: the base draws nothing for those, and every arm then learns them from nothing at
# one pace (docs/RESULTS.md). 16 held-out clips are the in-distribution prompts
CONTINUAL_WORLD = STUDY_WORLD | {"num": 616, "heldout_fraction": 0.026, "distractors": 1}


def _continual_stage2() -> Stage2Config:
    """Continual training from the base: a constant lr (a run extended from one scoring point
    to the next is the run trained there at once), no EMA, guidance kept by caption dropout.
    The study sets the rest: the DiT, frames, size and text length are the base's, and
    ``optim.steps`` each scoring point in turn."""
    config = Stage2Config(
        data=Stage2DataConfig(caption_dropout=0.1),
        models=Stage2ModelsConfig(aligner=None),
        optim=Stage2OptimConfig(batch_size=8, lr=2e-4, warmup_steps=0),
        log_every=50,
        save_every=250,
    )
    config.objective.align.saliency = "masks"  # the renderer's masks: the study isolates the routing
    config.precompute.flow = True  # MoAlign's motion head fits the clips' flow
    return config


# trained bases shipped with the package, one folder per base key: `KEY/transformer` (the DiT in
# Diffusers format) and `KEY/gate.json` (how it was made and what it scored)
COMMITTED_BASES = str(Path(__file__).resolve().parents[1] / "study" / "bases")


@dataclass
class BaseConfig:
    """``sara repro base``: the DiT every continual run starts from, pretrained on the study world."""

    world: SynthConfig = field(default_factory=lambda: SynthConfig(**STUDY_WORLD))
    stage2: Stage2Config = field(default_factory=_base_stage2)  # its folder, data and cache: the base's own
    gate_binding: float = option(0.8, ge=0, le=1)  # in-distribution binding the base must reach
    gate_all: float = option(0.5, ge=0, le=1)  # and `all` (every check of a video right)
    generate_steps: int = option(20, ge=1)  # denoising steps of the gate's samples (UniPC, CFG 5)
    # a folder of trained bases by key: a base whose key is there is installed from it (the
    # presets' Wan folder with its DiT in place) and gated, not trained; "": always train
    committed: str = COMMITTED_BASES


@dataclass
class ReproConfig:
    """``sara repro``: continual training of the base with SFT, TRD, MoAlign and SARA, scored by
    the exact shapes metric on two prompt sets at several steps."""

    out_dir: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/repro"  # study folder: base, world, runs, videos, table
    arms: list[str] = option(["sft", "trd", "moalign", "sara"], choices=tuple(ARMS))  # and sara-and, sara-xor
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # continual seeds: data order, noise, heads
    # the teacher of each study: vjepa2 (the tiny one: random-feature relations, a negative
    # control) and oracle (the renderer's entity colours per token: the scene's structure, an
    # upper bound); sft reads no teacher, so its runs are shared by every teacher's table
    teachers: list[str] = option(["vjepa2", "oracle"], choices=TEACHERS)
    # the continual training world, at the base world's frames and size; its held-out clips are
    # the in-distribution prompts (seen pairs)
    world: SynthConfig = field(default_factory=lambda: SynthConfig(**CONTINUAL_WORLD))
    points: list[int] = field(default_factory=lambda: [0, 200, 400])  # continual steps scored
    prompts: int = option(16, ge=2)  # prompts of unseen colour–shape pairs (the second set), as the world's
    prompt_seed: int = 1000  # renderer seed of the unseen set
    sample_seed: int = 0  # prompt i is sampled with seed sample_seed + i by every arm (paired noise)
    generate_steps: int = option(20, ge=1)  # denoising steps (UniPC, CFG 5)
    # videos sampled in one pipeline call, each from its own seed's noise: the videos sampled one
    # by one up to float rounding, in about half the time on a CPU (the VAE decodes them together)
    batch: int = option(16, ge=1)
    # runs trained and sampled at once, each in a process of its own with an equal share of the
    # CPU threads: the study's DiTs are so small that one run leaves a GPU mostly idle (launch
    # overhead, not arithmetic, bounds its step), so several share one card; 1: in this process
    jobs: int = option(1, ge=1)
    stage2: Stage2Config = field(default_factory=_continual_stage2)  # shared by every arm; mode and routing per arm
    base: BaseConfig = field(default_factory=BaseConfig)  # the pretrained DiT of `sara repro base`
