"""The demo's data sections: the synthetic shapes world with its masks and their pair budget,
and SAM 3 masks on two of its clips."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sara.budget import format_budget, plot_budget
from sara.config import DemoConfig
from sara.data.check import check_manifest
from sara.data.extract_masks import extract_masks
from sara.data.manifest import Manifest, load_manifest
from sara.data.masks import load_mask
from sara.data.saliency import mask_saliency
from sara.data.video import decode_clip, transform_masks
from sara.data.visualize import overlay, save_png, strip
from sara.demo.html import Section, image, paragraph, preformatted
from sara.models.presets import resolve
from sara.models.sam3 import Sam3Segmenter
from sara.routing import pair_budget
from sara.shapes.render import SynthSpec, synthesize

log = logging.getLogger(__name__)


def data_part(config: DemoConfig, out: Path) -> Section:
    """Synthesise a shapes world, check it, and show its masks and their pair budget."""
    spec = SynthSpec(**asdict(config.data), seed=config.seed, tubelet=config.grid.tubelet, patch=config.grid.patch)
    summary = synthesize(spec, out / "data", progress=False)
    manifest = load_manifest(out / "data" / "train.jsonl")
    report = check_manifest(manifest, progress=False)
    log.info("\n".join([*report.problems, report.summary()]))
    grid = config.grid
    size = (grid.size, grid.size)
    saliency, _ = mask_saliency(manifest, grid.frames, size, grid.tubelet, grid.patch, grid, progress=False)
    budget = pair_budget(saliency, config.budget.threshold)
    text = format_budget(budget, title="ground-truth masks of the training clips on the V-JEPA grid")
    log.info(text)
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
    log.info(line)
    body = paragraph(
        line + " The tiny SAM 3 has random weights (and zero detection thresholds, so that it tracks "
        "something): this shows the pipeline — every frame of each clip's range segmented at the "
        "video's resolution, one bit-packed file per entity, the manifest rewritten — not mask quality."
    )
    return Section("Data: SAM 3 masks", body)
