"""`sara repro base`: the pretrained DiT every continual run of the study starts from.

The paper's claim is about continual training of a model that already draws videos. Here that
model is the ``shapes`` preset's DiT pretrained with flow matching alone on the study world
(:data:`sara.config.repro.STUDY_WORLD`), then gated: its samples of the world's held-out
clips' prompts (seen colour–shape pairs, new layouts and motions) must reach the config's
binding and ``all`` under the exact shapes metric.

The base's folder is named by a digest of what makes it — its world, its Stage 2 config (paths
aside) and the preset format — so a changed recipe trains a new base and an unchanged one is
found again; inside, training resumes from its last checkpoint and written videos are kept.
A base whose key is among the committed ones (``base.committed``, by default
``sara/study/bases``) is installed instead of trained — the presets' Wan folder with the
committed DiT in place — and gated all the same: its samples, ceiling and VAE are measured on
the machine that installs it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from diffusers import AutoencoderKLWan

from sara.config.loader import config_to_yaml
from sara.config.repro import BaseConfig, ReproConfig
from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.data.manifest import Manifest, load_manifest
from sara.data.video import read_video
from sara.eval.tables import format_summaries
from sara.models.presets import PRESET_FORMAT, wan_folder
from sara.models.wan import HIGH, SUBFOLDER
from sara.run_dir import RunDir
from sara.shapes.metric import METRICS, score_manifest, score_video
from sara.shapes.render import SynthSpec, synthesize
from sara.shapes.vae import reconstruct
from sara.stage2.cache import precompute
from sara.stage2.export import copy_folder_without, publish_folder
from sara.stage2.generate import generate
from sara.stage2.train import train
from sara.stats import summarise

GATE = "gate.json"
TRANSFORMER = SUBFOLDER[HIGH]  # the base's one expert
CEILING_CLIPS = 300  # ground-truth training clips the metric's ceiling is measured on


def base_key(base: BaseConfig) -> str:
    """A digest of what makes the base: world, recipe (paths aside), preset format."""
    recipe = copy.deepcopy(base.stage2)
    recipe.out_dir = recipe.data.train = recipe.precompute.cache_dir = recipe.models.tiny_root = ""
    text = "\n".join([config_to_yaml(base.world), config_to_yaml(recipe), f"preset format {PRESET_FORMAT}"])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_folder(config: ReproConfig) -> Path:
    return Path(config.out_dir) / "base" / base_key(config.base)


def base_stage2(config: ReproConfig) -> Stage2Config:
    """The base's Stage 2 config, every path inside its folder (presets: the study's)."""
    folder, stage2 = base_folder(config), copy.deepcopy(config.base.stage2)
    stage2.out_dir = str(folder / "run")
    stage2.data.train = str(folder / "world" / "train.jsonl")
    stage2.precompute.cache_dir = str(folder / "cache")
    stage2.models.tiny_root = str(Path(config.out_dir) / "models")
    return stage2


def base_pipeline(config: ReproConfig) -> Path:
    """The Diffusers folder of the gated base: what ``models.wan`` of every continual run names."""
    return RunDir(base_folder(config) / "run").pipeline


def run_base(config: ReproConfig, progress: bool = True) -> dict:
    """Synthesise the world, pretrain, sample the held-out prompts and score them (each step
    skipped when already done); returns the gate report, also written to ``gate.json``."""
    folder, stage2, base = base_folder(config), base_stage2(config), config.base
    world = folder / "world"
    if not (world / "train.jsonl").is_file():
        synthesize(SynthSpec(**asdict(base.world), seed=0), world, progress=progress)
    # a base found trained keeps what was measured when it was trained: the time, and the
    # ceilings, which the world and the VAE its key names fix
    path = folder / GATE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    committed = Path(base.committed, folder.name) if base.committed else None
    if not base_pipeline(config).is_dir():
        if committed is not None and (committed / GATE).is_file():  # shipped: installed, then gated here
            _install(stage2, committed, base_pipeline(config))
            made = json.loads((committed / GATE).read_text())
            previous = {"seconds": made["seconds"], "committed": str(committed)}
        else:
            start = time.perf_counter()
            precompute(stage2, progress=progress)
            train(stage2, resume="latest", progress=progress)
            previous = {"seconds": round(time.perf_counter() - start, 1)}
    manifest = load_manifest(world / "heldout.jsonl")
    videos = folder / "videos"
    if len(list(videos.glob("*.mp4"))) < len(manifest):
        sampling = Sampling(
            steps=base.generate_steps, batch=config.batch, frames=stage2.data.frames, height=stage2.data.size,
            width=stage2.data.size, text_length=stage2.models.text_length,
        )  # fmt: skip
        generate(base_pipeline(config), [r.prompt() for r in manifest.records], videos, sampling, progress=progress)
    scores = summarise(score_manifest(manifest, videos, progress=progress), METRICS)
    ceiling = previous.get("ceiling") or _ceiling(world, progress)
    reconstruction = previous.get("reconstruction") or summarise(
        _reconstruction_scores(base_pipeline(config) / "vae", manifest), METRICS
    )
    passed = scores["binding"]["mean"] >= base.gate_binding and scores["all"]["mean"] >= base.gate_all
    report = {
        "key": folder.name,
        "steps": stage2.optim.steps,
        "seconds": previous.get("seconds"),  # precompute and training; None: found trained without a report
        "committed": previous.get("committed"),  # the folder its DiT was installed from; None: trained here
        "prompts": len(manifest),
        "ceiling": ceiling,  # the metric on the world's own clips
        "reconstruction": reconstruction,  # the held-out clips through the base's VAE: what a perfect DiT reaches
        "scores": scores,
        "gate": {"binding": base.gate_binding, "all": base.gate_all, "passed": passed},
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _install(stage2: Stage2Config, committed: Path, pipeline: Path) -> None:
    """The base's pipeline without training: the presets' Wan folder (VAE, text encoder,
    tokenizer, scheduler) with the committed DiT in place, written whole or not at all."""
    partial = copy_folder_without(wan_folder(stage2.models.wan, stage2.models.tiny_root), pipeline, {TRANSFORMER})
    shutil.copytree(committed / TRANSFORMER, partial / TRANSFORMER)
    publish_folder(partial, pipeline)


def _ceiling(world: Path, progress: bool) -> dict:
    """The metric on the world's first :data:`CEILING_CLIPS` ground-truth training clips."""
    train_set = load_manifest(world / "train.jsonl")
    ground_truth = Manifest(train_set.path, train_set.records[:CEILING_CLIPS])
    return {"clips": len(ground_truth), "scores": summarise(score_manifest(ground_truth, progress=progress), METRICS)}


def _reconstruction_scores(folder: Path, manifest: Manifest) -> list[dict]:
    """The metric of each record's clip after the VAE in ``folder`` encoded and decoded it."""
    vae = AutoencoderKLWan.from_pretrained(folder).eval()
    return [
        score_video(reconstruct(vae, read_video(manifest.resolve(r.video))), r.model_extra["render"])
        for r in manifest.records
    ]


def format_gate(report: dict) -> str:
    """The gate report as a few lines: scores with intervals, then passed or not."""
    rows = {
        f"ceiling ({report['ceiling']['clips']} clips)": report["ceiling"]["scores"],
        "VAE reconstruction": report["reconstruction"],
        "base": report["scores"],
    }
    lines = [f"base {report['key']}: {report['steps']} steps, {report['prompts']} in-distribution held-out prompts"]
    lines.append(format_summaries(rows, METRICS))
    gate = report["gate"]
    verdict = "passed" if gate["passed"] else "NOT passed"
    lines.append(f"gate (binding >= {gate['binding']}, all >= {gate['all']}): {verdict}")
    if report.get("committed"):
        lines.append(
            f"weights: installed from {report['committed']} (precompute and training took "
            f"{report['seconds'] / 60:.1f} min when it was made)"
        )
    elif report["seconds"] is not None:
        lines.append(f"precompute and training: {report['seconds'] / 60:.1f} min")
    return "\n".join(lines)
