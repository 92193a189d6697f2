"""The demo's Stage 1 section: train the tiny aligner, evaluate it, and compare the pair
budget of its predicted saliency with the ground truth's."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from sara.budget import _pyplot, format_budget, plot_budget
from sara.config.schema import DemoConfig
from sara.data.synthetic import SynthSpec, synthesize
from sara.report import Section, image, paragraph, preformatted, table
from sara.routing import pair_budget
from sara.stage1.evaluate import METRICS, predict
from sara.stage1.run import load_run
from sara.stage1.train import pick_device, train


def _union_per_clip(values: torch.Tensor, clip_of: torch.Tensor) -> torch.Tensor:
    """``[S, N]`` per (clip, entity) → ``[C, N]``: the max over each clip's entities."""
    out = torch.zeros(int(clip_of.max()) + 1, values.shape[1])
    return out.scatter_reduce_(0, clip_of[:, None].expand_as(values), values, "amax")


def _loss_curve(history: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    steps = [r["step"] for r in history]
    for key in ("loss", "bce", "dice", "infonce"):
        ax.plot(steps, [r[key] for r in history], label=key)
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stage1_part(config: DemoConfig, out: Path) -> Section:
    world = config.stage1_world
    spec = SynthSpec(**asdict(world), seed=config.seed)
    start = time.perf_counter()
    synthesize(spec, Path(config.stage1.data.train).parent, progress=False)
    synth_s = time.perf_counter() - start
    start = time.perf_counter()
    run = train(config.stage1, progress=False)
    train_s = time.perf_counter() - start
    metrics = json.loads((run / "eval.json").read_text())
    history = json.loads((run / "history.json").read_text())
    _, aligner, features = load_run(run, progress=False)
    held = features["heldout"]
    saliency, _ = predict(aligner, held, held.prompt_row, pick_device(config.stage1.device))
    budgets = {
        "ground-truth masks": pair_budget(_union_per_clip(held.targets, held.clip_of), config.budget.threshold),
        "predicted saliency": pair_budget(_union_per_clip(saliency, held.clip_of), config.budget.threshold),
    }
    text = "\n\n".join(format_budget(b, title=f"held-out clips, {name}") for name, b in budgets.items())
    print(text)
    chart = plot_budget(budgets, out / "stage1_budget.png")
    curve = _loss_curve(history, out / "stage1_loss.png")
    rows = [[name, f"{metrics[name]:.3f}"] for name in METRICS]
    body = "".join(
        [
            paragraph(
                f"`sara data synth`: {world.num} clips of {world.frames} frames at {world.size}² in {synth_s:.0f} s. "
                f"`sara stage1 train` ({config.stage1.models.aligner} aligner, {config.stage1.optim.steps} steps of "
                f"{config.stage1.optim.batch_size} samples, frozen tiny V-JEPA 2 / umT5 / Qwen3-VL): {train_s:.0f} s "
                f"on this machine, encoders included. Held-out figures ({len(held)} clip–entity samples; "
                "`sara stage1 eval`):"
            ),
            table(["metric", "value"], rows),
            image(curve, "stage 1 loss terms"),
            paragraph(
                "Pair budget of the held-out clips on the V-JEPA grid: ground-truth masks against the "
                "aligner's saliency (union over each clip's entity prompts)."
            ),
            preformatted(text),
            image(chart, "pair budget: ground truth vs predicted"),
        ]
    )
    return Section("Stage 1: the Semantic Aligner", body)
