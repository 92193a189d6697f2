"""The held-out prompt set: clips of 2–3 entities whose every colour–shape pair is one that
a ``pairs: seen`` training world never draws (its unseen pairs: ``UNSEEN_PAIRS`` for the whole
vocabulary). Its rendered videos are the metric's ceiling; a model trained on the seen world
is asked for new bindings."""

from __future__ import annotations

from pathlib import Path

from sara.shapes.render import SynthSpec, synthesize
from sara.shapes.vocabulary import COLOURS, SHAPES


def prompt_set_spec(num: int, seed: int, frames: int, size: int, **world) -> SynthSpec:
    """Every clip held out (``heldout.jsonl``), 2–3 entities (as many as the world's words
    allow), unseen pairs only; ``world``: the training world's ``backgrounds``, ``kinds``,
    ``colours`` and ``motions`` (default: the whole vocabulary over textured backgrounds)."""
    most = min(len(world.get("kinds", SHAPES)), len(world.get("colours", COLOURS)), 3)
    return SynthSpec(
        num=num, seed=seed, frames=frames, size=size, heldout_fraction=1.0, pairs="unseen",
        min_entities=min(2, most), max_entities=most, **world,
    )  # fmt: skip


def write_prompt_set(out: str | Path, num: int, seed: int, frames: int, size: int, workers: int = 2, **world) -> Path:
    """Render the set into ``out``; returns its manifest, ``out/heldout.jsonl``."""
    synthesize(prompt_set_spec(num, seed, frames, size, **world), out, workers=workers, progress=False)
    return Path(out) / "heldout.jsonl"
