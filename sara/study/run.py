"""`sara repro`: the toy reproduction — SFT vs TRD vs SARA on the shapes world.

For each teacher, training seed and arm, Stage 2 trains the same DiT from the same
initialisation on the same batches with the same noise (all functions of the seed); the
arms differ only in the alignment term. Each arm's pipeline then samples the held-out
prompt set (unseen colour–shape pairs) with paired noise — prompt ``i`` with seed
``sample_seed + i`` in every arm and seed — and the exact shapes metric scores every video.
The table (:mod:`sara.study.tables`) gives every seed, per-arm means with hierarchical
bootstrap intervals (seeds, then prompts) and paired differences against ``sft`` and
``trd``.

With ``jobs`` above 1 the runs go to that many worker processes at once (several tiny runs
share one GPU); a run's losses do not depend on which process ran it or when, up to the
rounding of sums split over another number of threads.

The study is resumable: a finished run (its ``pipeline/``) is not trained again, an
interrupted one resumes from its last checkpoint, videos already written are kept.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import torch

from sara.config import save_config
from sara.config.repro import ARMS, ReproConfig
from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.data.manifest import Manifest, load_manifest
from sara.run_dir import RunDir
from sara.shapes.metric import score_manifest
from sara.shapes.prompt_set import write_prompt_set
from sara.shapes.render import SynthSpec, synthesize
from sara.stage2.cache import precompute
from sara.stage2.generate import generate
from sara.stage2.train import train

Key = tuple[str, int, str]  # (teacher, seed, arm)


def arm_config(config: ReproConfig, teacher: str, seed: int, arm: str) -> Stage2Config:
    """The Stage 2 config of one run: the shared one with this seed, mode and routing."""
    stage2 = copy.deepcopy(config.stage2)
    stage2.seed = seed
    stage2.models.teacher = teacher
    stage2.objective.align.mode, stage2.objective.align.routing = ARMS[arm]
    stage2.out_dir = str(Path(config.out_dir) / "runs" / teacher / f"seed{seed}" / arm)
    stage2.precompute.cache_dir = str(Path(config.out_dir) / "cache" / teacher)
    return stage2


def _inputs(config: ReproConfig) -> Manifest:
    """The training world and the held-out prompt set, written once; returns the prompt set."""
    out = Path(config.out_dir)
    if not (out / "world" / "train.jsonl").is_file():
        synthesize(SynthSpec(**asdict(config.world), seed=0), out / "world", progress=False)
    prompts = out / "prompts" / "heldout.jsonl"
    if not prompts.is_file():
        world = config.world  # the prompts' scenes are the training world's
        write_prompt_set(
            out / "prompts",
            config.prompts,
            config.prompt_seed,
            world.frames,
            world.size,
            backgrounds=world.backgrounds,
        )
    return load_manifest(prompts)


def _sampling(config: ReproConfig) -> Sampling:
    stage2 = config.stage2
    return Sampling(
        steps=config.generate_steps, seed=config.sample_seed, frames=stage2.data.frames,
        height=stage2.data.size, width=stage2.data.size, text_length=stage2.models.text_length,
    )  # fmt: skip


def run_arm(config: ReproConfig, manifest: Manifest, teacher: str, seed: int, arm: str) -> list[dict]:
    """Train (or resume, or keep) one run, sample the prompt set, score it: one dict per prompt."""
    stage2 = arm_config(config, teacher, seed, arm)
    run = Path(stage2.out_dir)
    if not RunDir(run).pipeline.is_dir():
        train(stage2, resume="latest", progress=False)
    videos = run / "videos"
    if len(list(videos.glob("*.mp4"))) < len(manifest):
        generate(
            RunDir(run).pipeline, [r.prompt() for r in manifest.records], videos, _sampling(config), progress=False
        )
    scores = score_manifest(manifest, videos, progress=False)
    (run / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    return scores


def worker_threads(jobs: int) -> int:
    """Each worker's share of this machine's CPU threads."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_repro(config: ReproConfig, progress: bool = True) -> dict[Key, list[dict]]:
    """Every run of the study; returns the scores of each (teacher, seed, arm)."""
    from tqdm import tqdm

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    manifest = _inputs(config)
    keys = [(t, s, a) for t in config.teachers for s in config.seeds for a in config.arms]
    # here, before any worker starts: the presets (the shapes VAE trains for minutes) are
    # written once and the caches are shared by every run of a teacher
    for teacher in config.teachers:
        precompute(arm_config(config, teacher, config.seeds[0], "sara"), progress=False)  # one cache per teacher
    with tqdm(total=len(keys), desc="repro runs", disable=not progress) as bar:
        if config.jobs == 1:
            results = {}
            for key in keys:
                results[key] = run_arm(config, manifest, *key)
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        threads = (worker_threads(config.jobs),)
        with ProcessPoolExecutor(config.jobs, context, initializer=torch.set_num_threads, initargs=threads) as pool:
            futures = {pool.submit(run_arm, config, manifest, *key): key for key in keys}
            for future in as_completed(futures):
                future.result()  # a failed run stops the study with its own error
                bar.update()
        return {key: future.result() for future, key in futures.items()}  # in the order of keys


def write_study(config: ReproConfig, results: dict[Key, list[dict]], seconds: float) -> Path:
    """``results.json``, ``table.md`` and ``report.html`` (the table and each arm's frames of
    the first two prompts) in the study's folder; returns the table's path."""
    import numpy as np

    from sara.data.video import decode_clip
    from sara.data.visualize import save_png, strip
    from sara.demo.html import Section, image, paragraph, preformatted, write_report
    from sara.study.tables import format_study, study_tables

    out = Path(config.out_dir)
    tables = study_tables(results, config.teachers, config.seeds, config.arms)
    (out / "results.json").write_text(json.dumps(tables, indent=1) + "\n")
    steps, prompts = config.stage2.optim.steps, config.prompts
    header = (
        f"{len(config.arms)} arms × {len(config.seeds)} seeds × {len(config.teachers)} teacher(s), {steps} Stage 2 "
        f"steps each, {prompts} held-out prompts of unseen colour–shape pairs; wall time {seconds / 60:.1f} min."
    )
    text = header + "\n\n" + format_study(tables, config.seeds)
    (out / "table.md").write_text(text)
    sections = [Section("Results", paragraph(header) + preformatted(format_study(tables, config.seeds)))]
    teacher, seed = config.teachers[0], config.seeds[0]
    manifest = load_manifest(out / "prompts" / "heldout.jsonl")
    rows = [strip(decode_clip(manifest.resolve(r.video), None, None).frames.permute(0, 2, 3, 1).numpy(), count=8)
            for r in manifest.records[:2]]  # fmt: skip
    for arm in config.arms:
        videos = sorted((Path(arm_config(config, teacher, seed, arm).out_dir) / "videos").glob("*.mp4"))[:2]
        rows += [strip(decode_clip(v, None, None).frames.permute(0, 2, 3, 1).numpy(), count=8) for v in videos]
    frames = save_png(out / "frames.png", np.concatenate(rows))
    order = ", ".join(["ground truth", *config.arms])
    caption = f"The first two prompts ({teacher}, seed {seed}), one row per video: {order}."
    sections.append(Section("Samples", paragraph(caption) + image(frames, "frames per arm")))
    write_report(out / "report.html", "SARA toy reproduction", sections)
    return out / "table.md"
