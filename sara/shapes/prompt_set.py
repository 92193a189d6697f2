"""The held-out prompt set: clips of 2–3 entities whose every colour–shape pair is one that
a ``pairs: seen`` training world never draws (``UNSEEN_PAIRS``). Its rendered videos are
the metric's ceiling; a model trained on the seen world is asked for new bindings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sara.shapes.render import SynthSpec, synthesize
from sara.shapes.vocabulary import TEXTURED


def prompt_set_spec(num: int, seed: int, frames: int, size: int, backgrounds: Sequence[str] = TEXTURED) -> SynthSpec:
    """Every clip held out (``heldout.jsonl``), 2–3 entities, unseen pairs only."""
    return SynthSpec(
        num=num, seed=seed, frames=frames, size=size, heldout_fraction=1.0, min_entities=2, pairs="unseen",
        backgrounds=backgrounds,
    )  # fmt: skip


def write_prompt_set(
    out: str | Path, num: int, seed: int, frames: int, size: int, workers: int = 2,
    backgrounds: Sequence[str] = TEXTURED,
) -> Path:  # fmt: skip
    """Render the set into ``out``; returns its manifest, ``out/heldout.jsonl``."""
    synthesize(prompt_set_spec(num, seed, frames, size, backgrounds), out, workers=workers, progress=False)
    return Path(out) / "heldout.jsonl"
