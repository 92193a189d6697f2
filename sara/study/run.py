"""`sara repro study`: continual training of the base with SFT, TRD, MoAlign and SARA.

Every run starts from the weights of ``sara repro base`` (checked: each run's weights before
its first step are the base's, tensor for tensor) and trains on the continual world
(:data:`sara.config.repro.CONTINUAL_WORLD`: the base's named shape and an unnamed distractor).
For each teacher and seed the arms see the same batches with the same noise (functions of the
seed) and differ only in the alignment term; ``sft`` reads no teacher, so one ``sft`` run per
seed serves every teacher's table. At each scoring point (``points``, in continual steps) the
run samples the continual world's held-out clips (seen colour–shape pairs), and at the last
point also a set of unseen pairs (:func:`set_points`) — prompt ``i`` with seed
``sample_seed + i`` in every run (paired noise) — and the exact shapes metric scores each
video. Step 0 is the base itself, sampled once.

A run is extended from one point to the next by resuming it; the lr is constant, so that is
the run trained to the later point at once. The study is resumable: scores already written are
kept, an interrupted run resumes from its last checkpoint, videos already written are kept.

With ``jobs`` above 1 the runs go to that many worker processes at once (several tiny runs
share one GPU); a run's losses do not depend on which process ran it or when, up to the
rounding of sums split over another number of threads.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from sara.config import save_config
from sara.config.repro import ARMS, ReproConfig
from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.data.manifest import Manifest, load_manifest
from sara.files import write_text_atomic
from sara.run_dir import RunDir
from sara.shapes.metric import score_manifest
from sara.shapes.render import SynthSpec, synthesize
from sara.stage2.build import motion_head_folder
from sara.stage2.cache import precompute
from sara.stage2.generate import generate
from sara.stage2.motion import fit_motion_head
from sara.stage2.train import train
from sara.study.base import base_pipeline, base_stage2, run_base
from sara.study.workers import run_in_workers

log = logging.getLogger(__name__)

SETS = ("seen", "unseen")  # the prompt sets: the continual world's held-out clips; unseen colour–shape pairs
Key = tuple[str, int, str]  # (teacher, seed, arm)
Results = dict[str, dict[int, dict[Key, list[dict]]]]  # set -> point -> key -> one score dict per prompt


def run_folder(config: ReproConfig, teacher: str, seed: int, arm: str) -> Path:
    """``runs/TEACHER/seedS/ARM``; ``runs/sft/seedS`` for the run every teacher shares."""
    runs = Path(config.out_dir) / "runs"
    return runs / "sft" / f"seed{seed}" if arm == "sft" else runs / teacher / f"seed{seed}" / arm


def arm_config(config: ReproConfig, teacher: str, seed: int, arm: str) -> Stage2Config:
    """The Stage 2 config of one run: the shared one with this seed, teacher, mode and routing,
    starting from the base's DiT at the base's frames, size and text length."""
    stage2, base = copy.deepcopy(config.stage2), base_stage2(config)
    stage2.seed = seed
    stage2.models.teacher = config.teachers[0] if arm == "sft" else teacher
    stage2.objective.align.mode, stage2.objective.align.routing = ARMS[arm]
    stage2.out_dir = str(run_folder(config, teacher, seed, arm))
    stage2.data.train = str(Path(config.out_dir) / "world" / "train.jsonl")
    stage2.precompute.cache_dir = str(Path(config.out_dir) / "cache" / stage2.models.teacher)
    stage2.models.wan = str(base_pipeline(config))
    stage2.models.tiny_root = base.models.tiny_root
    stage2.models.text_length = base.models.text_length
    stage2.data.frames, stage2.data.size = base.data.frames, base.data.size
    return stage2


def prompt_sets(config: ReproConfig) -> dict[str, Path]:
    """The manifest of each prompt set (:data:`SETS`)."""
    out = Path(config.out_dir)
    return {"seen": out / "world" / "heldout.jsonl", "unseen": out / "prompts" / "unseen" / "heldout.jsonl"}


def check_worlds(config: ReproConfig) -> None:
    """The continual world is drawn at the base world's frames and size, in its words (the base
    learnt those alone): checked before the base trains."""
    world, made = config.world, config.base.world
    if (world.frames, world.size) != (made.frames, made.size):
        raise ValueError(
            f"world: {world.frames} frames at {world.size}², the base's world {made.frames} at {made.size}²: "
            "the continual world is drawn at the base's"
        )
    for name in ("kinds", "colours", "motions"):
        if getattr(world, name) != getattr(made, name):
            raise ValueError(
                f"world.{name}: {getattr(world, name)}, the base's world {getattr(made, name)}: "
                "the continual world speaks the base's words"
            )


def _inputs(config: ReproConfig) -> dict[str, Manifest]:
    """The continual world and the unseen-pairs prompt set, written once; returns both sets."""
    out, world = Path(config.out_dir), config.world
    if not (out / "world" / "train.jsonl").is_file():
        synthesize(SynthSpec(**asdict(world), seed=1), out / "world", progress=False)  # not the base's clips (seed 0)
    unseen = prompt_sets(config)["unseen"]
    if not unseen.is_file():
        spec = asdict(world) | {"num": config.prompts, "heldout_fraction": 1.0, "pairs": "unseen"}
        synthesize(SynthSpec(**spec, seed=config.prompt_seed), unseen.parent, progress=False)
    return {name: load_manifest(path) for name, path in prompt_sets(config).items()}


def _sampling(config: ReproConfig) -> Sampling:
    base = config.base.stage2
    return Sampling(
        steps=config.generate_steps, seed=config.sample_seed, batch=config.batch, frames=base.data.frames,
        height=base.data.size, width=base.data.size, text_length=base.models.text_length,
    )  # fmt: skip


def _scored(config: ReproConfig, pipeline: Path, manifest: Manifest, folder: Path) -> list[dict]:
    """Sample ``manifest``'s prompts into ``folder/videos`` (those written are kept), score them
    into ``folder/scores.jsonl``; one dict per prompt."""
    videos, path = folder / "videos", folder / "scores.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    if len(list(videos.glob("*.mp4"))) < len(manifest):
        prompts = [r.prompt() for r in manifest.records]
        generate(pipeline, prompts, videos, _sampling(config), progress=False, gif=False)
    scores = score_manifest(manifest, videos, progress=False)
    write_text_atomic(path, "".join(json.dumps(s) + "\n" for s in scores))  # whole or absent: it marks the point done
    return scores


def transformer_weights(pipeline: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Diffusers folder's DiT, by name."""
    files = sorted((pipeline / "transformer").glob("*.safetensors"))
    return {name: tensor for path in files for name, tensor in load_file(path).items()}


def check_start(config: ReproConfig, stage2: Stage2Config) -> None:
    """Export the run's weights before its first step and check them against the base's, every
    tensor bitwise: what a run trains from is the base, not a re-initialised or re-cast copy."""
    run = Path(stage2.out_dir)
    if (run / "start.json").is_file():
        return
    start = copy.deepcopy(stage2)
    start.optim.steps = 0
    train(start, progress=False)
    base, found = transformer_weights(base_pipeline(config)), transformer_weights(RunDir(run).pipeline)
    differ = sorted(k for k in base if k not in found or not torch.equal(base[k], found[k]))
    if differ or set(found) != set(base):
        raise RuntimeError(f"{run}: the weights before step 1 are not the base's ({len(differ)} tensors differ)")
    write_text_atomic(run / "start.json", json.dumps({"base": str(base_pipeline(config)), "tensors": len(base)}) + "\n")


def run_arm(config: ReproConfig, manifests: dict[str, Manifest], teacher: str, seed: int, arm: str) -> dict:
    """Check the start, then train (or resume) to each scoring point above 0 and score both
    prompt sets there; returns ``{point: {set: scores}}``."""
    stage2 = arm_config(config, teacher, seed, arm)
    check_start(config, stage2)
    run, scores = RunDir(stage2.out_dir), {}
    for point in scoring_points(config)[1:]:
        folder = run.path / "points" / f"step-{point}"
        names = [name for name in manifests if point in set_points(config, name)]
        if not all((folder / name / "scores.jsonl").is_file() for name in names):
            stage2.optim.steps = point
            train(stage2, resume="latest", progress=False)  # nothing to do when the last checkpoint is at point
        scores[point] = {name: _scored(config, run.pipeline, manifests[name], folder / name) for name in names}
    return scores


def scoring_points(config: ReproConfig) -> list[int]:
    """The continual steps scored, 0 (the base) always among them."""
    points = sorted({0, *config.points})
    if points[-1] == 0 or points[0] < 0:
        raise ValueError(f"points: {config.points}: continual steps, at least one above 0")
    return points


def set_points(config: ReproConfig, name: str) -> list[int]:
    """The points at which prompt set ``name`` is scored: the in-distribution set at every one;
    the unseen pairs, a second and harder probe, at the base and the last (scoring them at every
    point would cost a quarter of the study's time)."""
    points = scoring_points(config)
    return points if name == "seen" else [points[0], points[-1]]


def _prepare(config: ReproConfig, progress: bool) -> tuple[dict, dict[str, Manifest]]:
    """The base (trained or found), the inputs, one cache (and motion head) per teacher, and the
    base's scores (step 0); here, before any worker starts, so that every run shares them."""
    gate = run_base(config, progress)
    if not gate["gate"]["passed"]:
        log.warning(f"the base {gate['key']} did not pass its gate: the study runs on it as it is")
    manifests = _inputs(config)
    for teacher in config.teachers:
        stage2 = arm_config(config, teacher, config.seeds[0], "moalign")
        precompute(stage2, progress=progress)
        if "moalign" in config.arms and not motion_head_folder(stage2).is_dir():
            fit_motion_head(stage2, progress)
    base = Path(config.out_dir) / "base-samples"
    start = {name: _scored(config, base_pipeline(config), m, base / name) for name, m in manifests.items()}
    return {"gate": gate, "start": start}, manifests


def run_repro(config: ReproConfig, progress: bool = True) -> tuple[dict, Results]:
    """Every run of the study; returns the base's gate report and the scores per prompt set,
    point and ``(teacher, seed, arm)`` (``sft``'s runs under every teacher)."""
    from tqdm import tqdm

    check_worlds(config)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    base, manifests = _prepare(config, progress)
    runs = [("", s, "sft") for s in config.seeds if "sft" in config.arms]  # no teacher: every teacher's sft
    runs += [(t, s, a) for t in config.teachers for s in config.seeds for a in config.arms if a != "sft"]
    with tqdm(total=len(runs), desc="repro runs", disable=not progress) as bar:
        if config.jobs == 1:
            done = {}
            for key in runs:
                done[key] = run_arm(config, manifests, *key)
                bar.update()
        else:
            done = run_in_workers(run_arm, runs, config.jobs, config, manifests, done=bar.update)
    results: Results = {name: {} for name in manifests}
    for name in manifests:
        for point in set_points(config, name):
            results[name][point] = {
                (t, s, a): base["start"][name] if point == 0 else done[("" if a == "sft" else t, s, a)][point][name]
                for t in config.teachers
                for s in config.seeds
                for a in config.arms
            }
    return base["gate"], results
