"""The demo's Stage 1 section: train the tiny aligner, evaluate it, compare the pair budget
of its predicted saliency with the ground truth's, and draw its figures for a held-out clip."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from sara.budget import format_budget, plot_budget
from sara.config.schema import DemoConfig
from sara.demo.html import Section, image, paragraph, preformatted, table
from sara.device import pick_device
from sara.plots import loss_curves
from sara.routing import pair_budget
from sara.run_dir import RunDir
from sara.shapes.render import SynthSpec, synthesize
from sara.stage1.evaluate import predict
from sara.stage1.infer import infer
from sara.stage1.run import load_run
from sara.stage1.train import train

log = logging.getLogger(__name__)


def stage1_part(config: DemoConfig, out: Path) -> Section:
    world = config.stage1_world
    spec = SynthSpec(**asdict(world), seed=config.seed)
    start = time.perf_counter()
    synthesize(spec, Path(config.stage1.data.train).parent, progress=False)
    synth_s = time.perf_counter() - start
    start = time.perf_counter()
    run = train(config.stage1, progress=False)
    train_s = time.perf_counter() - start
    metrics = json.loads(RunDir(run).eval.read_text())
    history = json.loads(RunDir(run).history.read_text())
    _, aligner, features = load_run(run, progress=False)
    held = features["heldout"]
    captions = held.select(held.whole)  # one row per clip: its full caption, all its entities' masks
    saliency = predict(aligner, captions, captions.prompt_row, pick_device(config.stage1.device))
    budgets = {
        "ground-truth masks": pair_budget(captions.targets, config.budget.threshold),
        "predicted saliency": pair_budget(saliency, config.budget.threshold),
    }
    text = "\n\n".join(format_budget(b, title=f"held-out clips, {name}") for name, b in budgets.items())
    log.info(text)
    chart = plot_budget(budgets, out / "stage1_budget.png")
    curve = loss_curves(history, ("loss", "bce", "dice", "infonce"), out / "stage1_loss.png")
    figures = infer(run, config.stage1.data.heldout, [0], out=out / "stage1_figures", progress=False)
    rows = [[name, f"{value:.3f}"] for name, value in metrics.items()]
    body = "".join(
        [
            paragraph(
                f"`sara data synth`: {world.num} clips of {world.frames} frames at {world.size}² in {synth_s:.0f} s. "
                f"`sara stage1 train` ({config.stage1.models.aligner} aligner, {config.stage1.optim.steps} steps of "
                f"{config.stage1.optim.batch_size} samples, frozen tiny V-JEPA 2 / umT5 / Qwen3-VL): {train_s:.0f} s "
                f"on this machine, encoders included. Held-out figures ({len(held) - len(captions)} clip–entity "
                f"and {len(captions)} clip–full-caption samples; `sara stage1 eval`):"
            ),
            table(["metric", "value"], rows),
            image(curve, "stage 1 loss terms"),
            paragraph(
                "Pair budget of the held-out clips on the V-JEPA grid: the union of each clip's entity "
                "masks against the aligner's saliency for its full caption — the saliency Stage 2 routes by."
            ),
            preformatted(text),
            image(chart, "pair budget: ground truth vs predicted"),
            paragraph(
                f"`sara stage1 infer {config.stage1.data.heldout} --checkpoint {run}` on the first held-out clip: "
                "per prompt, the frames dimmed outside the ground-truth mask, the first three principal "
                "components of the enhanced features as RGB, and the saliency heat map; each entity "
                "prompt, then the full caption. GIF and MP4 of every frame beside each PNG in "
                f"{figures[0].parent}."
            ),
            *(image(path, f"stage 1 figure: {path.stem}") for path in figures),
            image(figures[-1].with_suffix(".gif"), "full-caption saliency, animated"),
        ]
    )
    return Section("Stage 1: the Semantic Aligner", body)
