"""``sara bench sample``: seconds per video of text-to-video sampling (:func:`render`: denoise
with CFG, decode, post-process) with the videos sampled one by one and ``batch`` at a time
(:attr:`Sampling.batch`), as speed-ups over one by one. Nothing is written."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from sara.config.sampling import Sampling
from sara.data.manifest import MTSSCaption
from sara.shapes.caption import SCENES, caption
from sara.shapes.vocabulary import COLOURS, MOTIONS, SHAPES
from sara.stage2.generate import Job, load_pipeline, render, resolve_sampling


def captions(count: int) -> list[str]:
    """``count`` prompts in the shapes world's grammar, as the continual study samples them: one
    named shape (kinds, colours and motions cycled) and one grey distractor on a plain background."""
    colours, motions = list(COLOURS), list(MOTIONS)
    named = [
        (f"{colours[i % len(colours)]} {SHAPES[i % len(SHAPES)]}", motions[i % len(motions)]) for i in range(count)
    ]
    return [MTSSCaption(**caption([entity], [], SCENES["plain"], unnamed=1)).flatten() for entity in named]


def bench_sample(folder: Path, sampling: Sampling, videos: int, batches: list[int], device: torch.device) -> list[dict]:
    """One row per batch size: seconds per video over ``videos`` videos (the same prompts and
    seeds in every row), after one untimed video."""
    sampling = resolve_sampling(sampling, folder)
    pipe = load_pipeline(folder, sampling, device)
    jobs = [Job(caption, sampling.seed + i, Path(str(i))) for i, caption in enumerate(captions(videos))]
    render(pipe, jobs[:1], sampling, progress=False, write=False)  # first-call set-up, not sampling
    rows = []
    for batch in batches:
        start = time.perf_counter()
        render(pipe, jobs, replace(sampling, batch=batch), progress=False, write=False)
        rows.append({"batch": batch, "videos": videos, "s_per_video": (time.perf_counter() - start) / videos})
    one = next((row["s_per_video"] for row in rows if row["batch"] == 1), None)
    for row in rows:
        row["speedup"] = None if one is None else one / row["s_per_video"]
    return rows


def format_sample(rows: list[dict]) -> str:
    lines = ["| videos per call | s / video | speed-up over 1 |", "|---|---|---|"]
    for row in rows:
        speedup = "–" if row["speedup"] is None else f"{row['speedup']:.2f} ×"
        lines.append(f"| {row['batch']} | {row['s_per_video']:.3f} | {speedup} |")
    return "\n".join(lines)
