"""Sampling settings come from the release a folder holds (Wan2.2's official values), then from
the folder itself; generation and validation resolve them alike."""

import shutil
from dataclasses import replace

import pytest
import torch

from sara.config import load_config
from sara.config.sampling import FALLBACK, Sampling
from sara.config.stage2 import Stage2Config
from sara.models.presets import RELEASED_ROOT, resolve
from sara.models.wan_family import WAN_NEGATIVE_PROMPT, family_of
from sara.stage2 import generate
from sara.stage2.build import resolve_setup
from sara.stage2.generate import Job, load_pipeline, render, resolve_sampling
from sara.stage2.validate import validation_sampling

A14B, TI2V = RELEASED_ROOT / "wan2.2-t2v-a14b", RELEASED_ROOT / "wan2.2-ti2v-5b"


def test_a_release_samples_with_its_official_settings():
    a14b = resolve_sampling(Sampling(), A14B)
    assert (a14b.frames, a14b.height, a14b.width, a14b.fps, a14b.steps) == (81, 720, 1280, 16.0, 40)
    # the folder's scheduler says 3.0; Wan samples A14B at 12, its high-noise expert at guidance 4, its low at 3
    assert (a14b.shift, a14b.guidance_scale, a14b.guidance_scale_2) == (12.0, 4.0, 3.0)
    assert a14b.negative_prompt == WAN_NEGATIVE_PROMPT and a14b.negative_prompt.startswith("色调艳丽，过曝")
    ti2v = resolve_sampling(Sampling(), TI2V)
    assert (ti2v.frames, ti2v.height, ti2v.width, ti2v.fps, ti2v.steps) == (121, 704, 1280, 24.0, 50)
    assert (ti2v.shift, ti2v.guidance_scale, ti2v.guidance_scale_2) == (5.0, 5.0, None)
    chosen = resolve_sampling(Sampling(shift=7.0, guidance_scale_2=2.5, negative_prompt="", fps=30.0), A14B)
    assert (chosen.shift, chosen.guidance_scale, chosen.guidance_scale_2, chosen.negative_prompt, chosen.fps) == (
        7.0, 4.0, 2.5, "", 30.0,
    )  # fmt: skip


def test_a_fine_tuned_copy_is_its_release_and_a_tiny_preset_is_none(tmp_path):
    shutil.copytree(A14B, tmp_path / "pipeline")  # RUN_DIR/pipeline: the release's folder, experts replaced
    assert family_of(tmp_path / "pipeline") == family_of(A14B) is not None
    tiny = resolve("tiny", "wan-a14b", tmp_path / "models")
    assert family_of(tiny) is None and family_of(resolve("tiny", "wan-ti2v", tmp_path / "models")) is None
    settings = resolve_sampling(Sampling(), tiny)
    assert settings.shift == 3.0  # the folder's own scheduler
    assert settings.negative_prompt == "" and settings.guidance_scale_2 is None and settings.frames == FALLBACK.frames


def test_validation_samples_as_generation_does_at_the_runs_shape(tmp_path, monkeypatch):
    for variable in ("WAN22_T2V_A14B", "WAN22_TI2V_5B", "VJEPA2", "SARA_ALIGNER"):
        monkeypatch.delenv(variable, raising=False)
    path = RELEASED_ROOT.parents[2] / "configs" / "stage2" / "wan2.2-ti2v-5b.yaml"
    config = load_config(Stage2Config, path, [f"models.tiny_root={tmp_path}"])
    sampling = validation_sampling(config, resolve_setup(config))
    generation = resolve_sampling(Sampling(), TI2V)
    assert (sampling.frames, sampling.height, sampling.width, sampling.fps) == (121, 704, 1280, 24.0)
    assert sampling.steps == config.validation.steps  # validation's own, fewer than the release's 50
    for setting in ("shift", "guidance_scale", "guidance_scale_2", "negative_prompt", "scheduler"):
        assert getattr(sampling, setting) == getattr(generation, setting), setting
    config = load_config(Stage2Config, path.with_name("wan2.2-t2v-a14b.yaml"), [f"models.tiny_root={tmp_path}"])
    a14b = validation_sampling(config, resolve_setup(config))
    assert (a14b.shift, a14b.guidance_scale, a14b.guidance_scale_2, a14b.fps) == (12.0, 4.0, 3.0, 16.0)


@pytest.mark.slow
def test_the_low_noise_expert_gets_its_own_guidance(tmp_path):
    folder = resolve("tiny", "wan-a14b", tmp_path / "models")
    sampling = resolve_sampling(Sampling(steps=2, frames=5, height=32, width=32, guidance_scale_2=3.0), folder)
    pipe = load_pipeline(folder, sampling, torch.device("cpu"))
    (video,) = render(pipe, [Job("a red circle", 0, tmp_path / "v")], sampling, progress=False, gif=False)
    assert video.is_file() and (pipe.guidance_scale, pipe._guidance_scale_2) == (5.0, 3.0)
    one = resolve("tiny", "wan", tmp_path / "models")  # one expert: no second scale to pass (diffusers refuses one)
    render(load_pipeline(one, sampling, torch.device("cpu")), [Job("a red circle", 0, tmp_path / "w")], sampling, False)


@pytest.mark.slow
def test_videos_sampled_together_are_the_videos_sampled_alone(tmp_path, monkeypatch):
    written = {}

    def keep(path, array, fps):  # the frames each video file would get
        written[path] = array
        return path

    monkeypatch.setattr(generate, "write_video", keep)
    folder = resolve("tiny", "wan", tmp_path / "models")
    prompts = ["a red circle", "a blue square that moves from left to right, then stops", "two green stars"]
    sampling = resolve_sampling(Sampling(steps=3, frames=9, height=32, width=48), folder)  # non-square, 3 latent frames
    pipe = load_pipeline(folder, sampling, torch.device("cpu"))
    for batch in (1, 2):  # two calls: a pair and the odd one out
        jobs = [Job(p, 7 + i, tmp_path / f"b{batch}" / f"{i}") for i, p in enumerate(prompts)]
        render(pipe, jobs, replace(sampling, batch=batch), progress=False, gif=False)
    alone, together = (torch.stack([written[tmp_path / f"b{b}" / f"{i}.mp4"] for i in range(3)]) for b in (1, 2))
    assert together.shape == (3, 9, 3, 32, 48)
    assert (alone.int() - together.int()).abs().max() <= 1  # float rounding of a batched matmul, nothing more
    assert (together[0].int() - together[1].int()).abs().max() > 8  # and each its own prompt and noise
    with pytest.raises(ValueError, match="--batch: 0"):
        render(pipe, jobs, replace(sampling, batch=0), progress=False)
