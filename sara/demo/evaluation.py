"""The demo's evaluation section: the held-out prompt set of unseen colour–shape pairs, the
shapes metric's ceiling (the set's own videos) and floor (mismatched prompts), and the
scores of the videos the demo's Stage 2 pipeline generates for those prompts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sara.config.sampling import Sampling
from sara.config.schema import DemoConfig
from sara.data.manifest import load_manifest
from sara.data.video import decode_clip
from sara.data.visualize import save_png, strip
from sara.demo.html import Section, image, paragraph, table
from sara.eval.tables import format_summaries, summary_rows
from sara.models.presets import wan_folder
from sara.models.wan import dit_parameters
from sara.run_dir import RunDir
from sara.shapes.metric import METRICS, score_manifest
from sara.shapes.prompt_set import write_prompt_set
from sara.shapes.vocabulary import WORLD_OPTIONS
from sara.stage2.generate import generate
from sara.stats import summarise

log = logging.getLogger(__name__)


def evaluation_part(config: DemoConfig, out: Path) -> Section:
    stage2 = config.stage2
    size, frames = stage2.data.size, stage2.data.frames
    world = {name: getattr(config.stage2_world, name) for name in WORLD_OPTIONS}  # the training world's words
    manifest = load_manifest(write_prompt_set(out / "prompts", config.eval_prompts, 1000, frames, size, **world))
    sampling = Sampling(
        steps=config.generate_steps, seed=config.seed, frames=frames, height=size, width=size,
        text_length=stage2.models.text_length,
    )  # fmt: skip
    videos = generate(RunDir(stage2.out_dir).pipeline, [r.prompt() for r in manifest.records], out / "eval_videos",
                      sampling, progress=False)  # fmt: skip
    generated = f"generated ({stage2.objective.align.mode}, {stage2.optim.steps} steps)"
    results = {
        "ground truth (ceiling)": score_manifest(manifest, progress=False),
        "mismatched prompts (floor)": score_manifest(manifest, rotate=1, progress=False),
        generated: score_manifest(manifest, out / "eval_videos", progress=False),
    }
    summaries = {name: summarise(rows, METRICS, config.seed) for name, rows in results.items()}
    text = format_summaries(summaries, METRICS)
    log.info(text)
    (out / "eval_shapes.json").write_text(json.dumps(summaries, indent=2) + "\n")
    rows = [strip(decode_clip(v, None, None).frames.permute(0, 2, 3, 1).numpy(), count=8) for v in videos[:2]]
    truth = [strip(decode_clip(manifest.resolve(r.video), None, None).frames.permute(0, 2, 3, 1).numpy(), count=8)
             for r in manifest.records[:2]]  # fmt: skip
    wan = wan_folder(stage2.models.wan, stage2.models.tiny_root)
    has_gate = (wan / "vae" / "gate.json").is_file()
    frames_png = save_png(out / "eval_frames.png", np.concatenate([truth[0], rows[0], truth[1], rows[1]]))
    body = "".join(
        [
            paragraph(
                f"`sara eval shapes-set`: {len(manifest)} held-out prompts of 2–3 entities whose every colour–shape "
                "pair the demo's worlds never show (`pairs: seen`). `sara stage2 generate` sampled each with the "
                f"trained pipeline ({config.generate_steps} UniPC steps, CFG 5) and `sara eval shapes` scored them "
                "against their prompts, beside the set's own videos (the ceiling) and the videos scored against the "
                "next prompt (the floor). Mean [95 % bootstrap interval] over prompts:"
            ),
            table(["", *METRICS], summary_rows(summaries, METRICS)),
            paragraph(
                f"The Wan folder `{stage2.models.wan}`"
                + (
                    " decodes latents with a VAE trained on the shapes world (Stage 2 section)"
                    if has_gate
                    else " has a VAE with random weights: its videos decode to texture and score at the floor or below"
                )
                + f"; the DiT is {dit_parameters(wan) / 1e6:.2f} M parameters trained for minutes on CPU, and `sara repro` is "
                "the study of the arms. Rows: the first two prompts, ground truth above the generated video. Prompts: "
                + " | ".join(r.prompt() for r in manifest.records[:2])
            ),
            image(frames_png, "ground truth and generated frames"),
        ]
    )
    return Section("Evaluation: the exact shapes metric", body)
