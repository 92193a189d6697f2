"""Typed config of the toy reproduction (`sara repro`). Each field's comment says what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field

from sara.config.loader import option
from sara.config.schema import SynthConfig
from sara.config.stage2 import TEACHERS, Stage2Config, Stage2DataConfig, Stage2ModelsConfig, Stage2OptimConfig

# arm name -> (objective.align.mode, objective.align.routing)
ARMS = {
    "sft": ("sft", "or"),
    "trd": ("trd", "or"),
    "sara": ("sara", "or"),
    "sara-and": ("sara", "and"),
    "sara-xor": ("sara", "xor"),
}


def _repro_stage2() -> Stage2Config:
    """Stage 2 on the study's world, saliency from the renderer's masks (the study isolates
    the routing, not the aligner), every path inside the study's folder."""
    config = Stage2Config(
        out_dir="${out_dir}/runs",
        data=Stage2DataConfig(train="${out_dir}/world/train.jsonl"),
        models=Stage2ModelsConfig(wan="shapes", aligner=None, tiny_root="${out_dir}/models"),
        optim=Stage2OptimConfig(steps=1000, batch_size=4, lr=1e-3),  # the medium DiT learns at 1e-3
        log_every=50,
        save_every=1000,
    )
    config.objective.align.saliency = "masks"
    return config


@dataclass
class ReproConfig:
    """``sara repro``: SFT vs TRD vs SARA on the shapes world, scored by the exact metric."""

    out_dir: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/repro"  # study folder: world, runs, videos, table
    arms: list[str] = option(["sft", "trd", "sara"], choices=tuple(ARMS))  # sft, trd, sara (or), sara-and, sara-xor
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # training seeds: init, data order, noise
    # the TRD teacher of each study: vjepa2 (the tiny one: random-feature relations, a negative
    # control) and oracle (the renderer's entity colours per token: the scene's structure)
    teachers: list[str] = option(["vjepa2", "oracle"], choices=TEACHERS)
    world: SynthConfig = field(  # the training world: never the unseen colour–shape pairs
        default_factory=lambda: SynthConfig(num=200, frames=17, size=128, heldout_fraction=0.1, pairs="seen")
    )
    prompts: int = option(32, ge=2)  # held-out prompts of unseen pairs (sara eval shapes-set)
    prompt_seed: int = 1000  # renderer seed of the prompt set
    sample_seed: int = 0  # prompt i is sampled with seed sample_seed + i by every arm (paired noise)
    generate_steps: int = option(20, ge=1)  # denoising steps (UniPC, CFG 5)
    # runs trained and sampled at once, each in a process of its own with an equal share of the
    # CPU threads: the study's DiTs are so small that one run leaves a GPU mostly idle (launch
    # overhead, not arithmetic, bounds its step), so several share one card; 1: in this process
    jobs: int = option(1, ge=1)
    stage2: Stage2Config = field(default_factory=_repro_stage2)  # shared by every arm; mode and routing per arm
