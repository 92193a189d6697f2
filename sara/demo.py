"""``sara demo``: the pipeline end to end on generated data, with an HTML report.

Each part writes its files into the run folder and returns a report section.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sara.budget import example_saliency, format_budget, plot_budget, saliency_grid_figure
from sara.config import DemoConfig, save_config
from sara.data.check import check_manifest
from sara.data.extract_masks import extract_masks
from sara.data.manifest import Manifest, load_manifest
from sara.data.masks import load_mask
from sara.data.saliency import mask_saliency
from sara.data.synthetic import SynthSpec, synthesize
from sara.data.video import decode_clip, transform_masks
from sara.data.visualize import overlay, save_png, strip
from sara.ecosystem import ecosystem_part
from sara.eval.report import evaluation_part
from sara.losses import trd_loss, trd_loss_dense
from sara.losses.trd import auto_chunk, visited_panels
from sara.models.presets import resolve
from sara.models.sam3 import Sam3Segmenter
from sara.parallel.report import parallel_part
from sara.report import Section, image, paragraph, preformatted, table, text_table, write_report
from sara.routing import MODES, pair_budget
from sara.stage1.report import stage1_part
from sara.stage2.report import stage2_part


def data_part(config: DemoConfig, out: Path) -> Section:
    """Synthesise a shapes world, check it, and show its masks and their pair budget."""
    spec = SynthSpec(**asdict(config.data), seed=config.seed, tubelet=config.grid.tubelet, patch=config.grid.patch)
    summary = synthesize(spec, out / "data", progress=False)
    manifest = load_manifest(out / "data" / "train.jsonl")
    report = check_manifest(manifest, progress=False)
    print("\n".join([*report.problems, report.summary()]))
    grid = config.grid
    size = (grid.size, grid.size)
    saliency, _ = mask_saliency(manifest, grid.frames, size, grid.tubelet, grid.patch, grid, progress=False)
    budget = pair_budget(saliency, config.budget.threshold)
    text = format_budget(budget, title="ground-truth masks of the training clips on the V-JEPA grid")
    print(text)
    (out / "data_budget.txt").write_text(text + "\n")
    chart = plot_budget({"ground-truth masks": budget}, out / "data_budget.png")
    rows = []
    for record in manifest.records[:3]:
        clip = decode_clip(manifest.resolve(record.video), 8, size, where="uniform")  # frames spread over the clip
        masks = [
            transform_masks(load_mask(manifest.resolve(e.mask)), clip, clip.frames.shape[-2:]) for e in record.entities
        ]
        rows.append(strip(clip.frames.permute(0, 2, 3, 1).numpy(), count=8))
        rows.append(strip(overlay(clip.frames, masks), count=8))
    overlays = save_png(out / "data_masks.png", np.concatenate(rows))
    clips = ", ".join(f"{n} {split}" for split, n in summary["clips"].items())
    body = "".join(
        [
            paragraph(
                f"`sara data synth`: {clips} clips of {spec.frames} frames at {spec.size}×{spec.size}, "
                f"mean FG share of the token grid {summary['fg_fraction']:.3f}; every entity shows at least "
                f"{summary['least_visible']:.2f} of its area in every frame (rule: {spec.min_visible}). "
                f"`sara data check`: {report.summary()}."
            ),
            paragraph("Frames of the first training clips; below each, every entity's mask tinted (red, green, blue):"),
            image(overlays, "frames with mask overlays"),
            paragraph("Captions: " + " | ".join(r.prompt() for r in manifest.records[:3])),
            preformatted(text),
            image(chart, "pair budget of the ground-truth masks"),
        ]
    )
    return Section("Data: the synthetic shapes world", body)


def masks_part(config: DemoConfig, out: Path) -> Section:
    """`sara data masks` with the tiny SAM 3 on two training clips whose masks are set aside."""
    source = load_manifest(out / "data" / "train.jsonl")
    records = [r.model_copy(deep=True) for r in source.records[:2]]
    for record in records:
        for entity in record.entities:
            entity.mask = None
    manifest = Manifest(out / "data" / "sam3.jsonl", records)
    weights = resolve("tiny", "sam3", config.stage1.models.tiny_root, seed=config.seed)
    start = time.perf_counter()
    stats = extract_masks(manifest, Sam3Segmenter(weights), out / "data" / "sam3_masks", progress=False)
    seconds = time.perf_counter() - start
    report = check_manifest(load_manifest(manifest.path), progress=False)
    line = (
        f"`sara data masks {manifest.path.name} --weights {weights}`: {stats.done} clips, {stats.frames} frames "
        f"in {seconds:.1f} s on CPU; `sara data check` on the result: {report.summary()}."
    )
    print(line)
    body = paragraph(
        line + " The tiny SAM 3 has random weights (and zero detection thresholds, so that it tracks "
        "something): this shows the pipeline — every frame of each clip's range segmented at the "
        "video's resolution, one bit-packed file per entity, the manifest rewritten — not mask quality."
    )
    return Section("Data: SAM 3 masks", body)


def budget_part(config: DemoConfig, out: Path) -> tuple[Section, dict[str, torch.Tensor]]:
    """Pair budget of a generated saliency (soft, as an aligner predicts it, and its hard mask)."""
    grid = tuple(config.budget.grid)
    soft = example_saliency(grid, config.budget.fg_fraction, config.seed)
    saliencies = {"soft saliency": soft, "hard mask": (soft > config.budget.threshold).float()}
    torch.save(soft, out / "example_saliency.pt")
    budgets = {name: pair_budget(s, config.budget.threshold) for name, s in saliencies.items()}
    text = "\n\n".join(format_budget(b, title=name) for name, b in budgets.items())
    print(text)
    (out / "budget.txt").write_text(text + "\n")
    (out / "budget.json").write_text(json.dumps(budgets, indent=2))
    chart = plot_budget(budgets, out / "budget.png")
    frames = saliency_grid_figure(soft[0], grid, out / "example_saliency.png", f"example saliency on the {grid} grid")
    body = "".join(
        [
            paragraph(
                "A saliency of three moving subjects on the V-JEPA 2 token grid "
                f"{grid}, {100 * config.budget.fg_fraction:.0f} % of tokens above {config.budget.threshold}. "
                "Uniform TRD spends most of its pairs on background; OR routing keeps every pair that "
                "touches a subject and drops background–background pairs. "
                f"Same table as `sara budget {out / 'example_saliency.pt'}`."
            ),
            image(frames, "example saliency"),
            preformatted(text),
            image(chart, "pair budget"),
        ]
    )
    return Section("Pair budget", body), saliencies


def objective_part(config: DemoConfig, saliencies: dict[str, torch.Tensor]) -> Section:
    """Dense and blockwise TRD on random features: same loss and gradient, fewer pairs computed."""
    generator = torch.Generator().manual_seed(config.seed)
    tokens = next(iter(saliencies.values())).shape[1]
    target = torch.randn(1, tokens, config.budget.feature_dim, generator=generator)
    pred = (0.5 * target + torch.randn(target.shape, generator=generator)).requires_grad_()
    chunk = config.trd.chunk_size or auto_chunk(tokens)
    rows = []
    for name, saliency in saliencies.items():
        for mode in MODES:
            dense = trd_loss_dense(pred, target, saliency, mode, config.trd.margin)
            blockwise = trd_loss(pred, target, saliency, mode, config.trd.margin, chunk)
            dense_grad, block_grad = (torch.autograd.grad(loss, pred)[0] for loss in (dense, blockwise))
            relative = ((block_grad - dense_grad).norm() / dense_grad.norm()).item()
            # a panel stands for its pairs and their mirror images, its diagonal block only once
            computed = sum(
                2 * (r1 - r0) * (c1 - c0) - (r1 - r0) ** 2 * (c0 == r0)
                for r0, r1, c0, c1 in visited_panels(saliency, mode, chunk)
            )
            rows.append(
                [
                    name,
                    mode,
                    f"{dense.item():.6f}",
                    f"{blockwise.item():.6f}",
                    f"{relative:.1e}",
                    f"{100 * computed / tokens**2:.0f} %",
                ]
            )
    header = ["saliency", "mode", "dense loss", "blockwise loss", "grad rel. diff", "pairs computed"]
    print(text_table(header, rows))
    body = paragraph(
        f"TRD (margin {config.trd.margin}) on random features of width {config.budget.feature_dim} "
        f"over the {tokens} tokens above: the exact blockwise path (row block {chunk}) against the dense "
        "reference. 'pairs computed' is the share of pairs the blockwise path evaluates: with exact "
        "zeros in the saliency it sorts tokens and skips blocks whose weights are all zero. Timings: "
        "`sara bench trd`."
    ) + table(header, rows)
    return Section("Objective: routed TRD, dense vs blockwise", body)


MARKER = ".sara-demo"  # what makes a folder the demo's own, to be emptied by the next run
KEPT = ("models",)  # tiny presets: versioned by their folder names, written once


def _fresh_folder(out: Path) -> Path:
    """``out`` emptied of a previous demo run (its caches would be refused once the code that
    made them changes), keeping the tiny presets; a non-empty folder that is not a demo's is
    an error, never emptied."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(f"out_dir: {out} holds files of something other than a demo run; choose another folder")
        for item in out.iterdir():
            if item.name in (*KEPT, MARKER):
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    return out


def run_demo(config: DemoConfig) -> Path:
    """Run every demo part into ``config.out_dir``; returns the report's path."""
    out = _fresh_folder(Path(config.out_dir))
    save_config(config, out)
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}

    def timed(part, *args):
        """``part(*args)``, its wall time kept for the report's last table."""
        start = time.perf_counter()
        result = part(*args)
        name = part.__name__.removesuffix("_part")
        seconds[name] = time.perf_counter() - start
        print(f"demo part {name}: {seconds[name]:.0f} s")
        return result

    data_sections = [timed(data_part, config, out), timed(masks_part, config, out)]
    budget_section, saliencies = timed(budget_part, config, out)
    stages = [
        timed(part, config, out) for part in (stage1_part, stage2_part, evaluation_part, ecosystem_part, parallel_part)
    ]
    sections = [*data_sections, *stages, budget_section, timed(objective_part, config, saliencies)]
    rows = [[name, f"{s:.0f}"] for name, s in seconds.items()] + [["all", f"{sum(seconds.values()):.0f}"]]
    sections.append(Section("Where the time went", table(["part", "seconds"], rows)))
    report = write_report(out / "report.html", "SARA demo", sections)
    print(f"report: {report}")
    return report
