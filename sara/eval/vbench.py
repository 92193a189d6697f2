"""VBench: sample its prompt suites by its protocol, run it from its own environment, and
read its results into our tables.

VBench pins ``transformers==4.33.2`` and ``numpy<2``, so it cannot share ``sara``'s
environment: ``make vbench-env`` builds ``.venv-vbench`` and ``sara eval vbench`` runs its
``vbench evaluate`` there, with the weights of each dimension read from
``VBENCH_CACHE_DIR`` (``--load_ckpt_from_local``: nothing is downloaded). Its evaluator
needs CUDA.

The protocol (VBench's standard mode): every prompt of the chosen dimensions is sampled
``PER_PROMPT`` times into ``{prompt}-{i}.mp4``, each with its own seed (recorded in
``seeds.json``); the prompts come from ``VBench_full_info.json`` (``prompt_en`` and the
``dimension`` list of each prompt) of the installed package or a given folder, or from
``prompts_per_dimension/{dimension}.txt``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sara.stage2.generate import Job

PER_PROMPT = 5  # videos per prompt in VBench's standard protocol
FULL_INFO = "VBench_full_info.json"
ENV = Path(".venv-vbench")  # what `make vbench-env` builds
# the weights each dimension reads from VBENCH_CACHE_DIR (docs/EVALUATION.md lists the files)
WEIGHTS = {
    "subject_consistency": "DINO ViT-B/16",
    "background_consistency": "CLIP ViT-B/32",
    "temporal_flickering": "none (pixel differences)",
    "motion_smoothness": "AMT-S (amt_model/amt-s.pth)",
    "dynamic_degree": "RAFT (raft_model/models/raft-things.pth)",
    "aesthetic_quality": "CLIP ViT-L/14 + LAION aesthetic head (aesthetic_model/emb_reader/)",
    "imaging_quality": "MUSIQ (pyiqa_model/musiq_spaq_ckpt-358bb6af.pth)",
    "object_class": "GRiT (grit_model/grit_b_densecap_objectdet.pth, detectron2)",
    "multiple_objects": "GRiT (grit_model/grit_b_densecap_objectdet.pth, detectron2)",
    "color": "GRiT (grit_model/grit_b_densecap_objectdet.pth, detectron2)",
    "spatial_relationship": "GRiT (grit_model/grit_b_densecap_objectdet.pth, detectron2)",
    "human_action": "UMT (umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth)",
    "temporal_style": "ViCLIP (ViCLIP/ViClip-InternVid-10M-FLT.pth, bpe_simple_vocab_16e6.txt.gz)",
    "overall_consistency": "ViCLIP (ViCLIP/ViClip-InternVid-10M-FLT.pth, bpe_simple_vocab_16e6.txt.gz)",
    "appearance_style": "CLIP ViT-B/32",
    "scene": "Tag2Text (caption_model/tag2text_swin_14m.pth)",
}


def check_dimensions(dimensions: list[str]) -> None:
    """Raises ``ValueError`` naming the first dimension VBench does not have."""
    for dimension in dimensions:
        if dimension not in WEIGHTS:
            raise ValueError(f"--dimension: {dimension!r}; choose from {', '.join(WEIGHTS)}")


def installed_suite(env: Path = ENV) -> Path | None:
    """The folder of the ``vbench`` package installed in ``env``, if any."""
    found = sorted(env.glob(f"lib/python*/site-packages/vbench/{FULL_INFO}"))
    return found[0].parent if found else None


def read_prompts(suite: str | Path, dimensions: list[str]) -> list[str]:
    """The prompts of ``dimensions`` in a suite folder, in its order and without repeats:
    from ``VBench_full_info.json``, else from ``prompts_per_dimension/{dimension}.txt``.

    Raises:
        ValueError: the folder has neither, or no prompt belongs to the dimensions.
    """
    suite = Path(suite)
    check_dimensions(dimensions)
    if (suite / FULL_INFO).is_file():
        entries = json.loads((suite / FULL_INFO).read_text())
        prompts = [e["prompt_en"] for e in entries if set(e.get("dimension", [])) & set(dimensions)]
    elif (suite / "prompts_per_dimension").is_dir():
        prompts = []
        for dimension in dimensions:
            path = suite / "prompts_per_dimension" / f"{dimension}.txt"
            if not path.is_file():
                raise ValueError(f"{path}: missing")
            prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        raise ValueError(f"{suite}: no {FULL_INFO} or prompts_per_dimension/ (a VBench checkout or package)")
    unique = list(dict.fromkeys(prompts))
    if not unique:
        raise ValueError(f"{suite}: no prompt of {', '.join(dimensions)}")
    for prompt in unique:
        if "/" in prompt:  # the file name is the prompt
            raise ValueError(f"{suite}: prompt {prompt!r} cannot be a file name")
    return unique


def sample_plan(prompts: list[str], out: str | Path, seed: int, per_prompt: int = PER_PROMPT) -> list[Job]:
    """Each video to sample: ``out/{prompt}-{i}`` with seed ``seed + i`` (one seed per index,
    the same for every prompt, as VBench's own sampling scripts do)."""
    return [Job(p, seed + i, Path(out) / f"{p}-{i}") for p in prompts for i in range(per_prompt)]


def seeds_record(jobs: list[Job]) -> list[dict]:
    """What ``seeds.json`` keeps of each video: its file, prompt and seed."""
    return [{"file": f"{job.stem.name}.mp4", "prompt": job.prompt, "seed": job.seed} for job in jobs]


def vbench_command(
    videos: str | Path, dimensions: list[str], out: str | Path, full_info: str | Path, env: Path = ENV
) -> list[str]:
    """``vbench evaluate`` of ``env`` on ``videos`` (standard mode, checkpoints from the cache)."""
    check_dimensions(dimensions)
    command = [str(env / "bin" / "vbench"), "evaluate", "--videos_path", str(videos), "--dimension", *dimensions]
    return command + ["--output_path", str(out), "--full_json_dir", str(full_info), "--load_ckpt_from_local", "True"]


def vbench_environment(cache: str | Path) -> dict[str, str]:
    """The environment of the evaluator: weights from ``cache``, nothing from the network."""
    return os.environ | {"VBENCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def read_results(out: str | Path) -> dict[str, dict]:
    """The scores of every ``*_eval_results.json`` VBench wrote into ``out``: per dimension its
    score and the number of videos scored (the file's ``[score, [per-video results]]``).

    Raises:
        ValueError: no results file, or one that is not VBench's format.
    """
    files = sorted(Path(out).glob("*_eval_results.json"))
    if not files:
        raise ValueError(f"{out}: no *_eval_results.json (did the VBench run finish?)")
    table = {}
    for path in files:
        for dimension, value in json.loads(path.read_text()).items():
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int | float)):
                raise ValueError(f"{path}: {dimension}: expected [score, [per-video results]]")
            table[dimension] = {"score": float(value[0]), "videos": len(value[1]), "file": path.name}
    return table
