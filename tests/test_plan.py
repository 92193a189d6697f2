"""`sara stage2 plan` against the released models' configs: the shipped real configs resolve at
the world sizes their comments name, and every problem is one line naming its key."""

from pathlib import Path

import pytest
import torch
from transformers import UMT5Config, VJEPA2Config

from sara.cli import main
from sara.config import load_config
from sara.config.stage2 import Stage2Config
from sara.models.presets import RELEASED_ROOT, resolve
from sara.models.wan import read_layout
from sara.stage2.build import build_model, resolve_setup
from sara.stage2.plan import plan_run

CONFIGS = Path(__file__).parents[1] / "configs" / "stage2"
A14B, TI2V = CONFIGS / "wan2.2-t2v-a14b.yaml", CONFIGS / "wan2.2-ti2v-5b.yaml"
P720 = "data.buckets=[[720,1280],[1280,720]]"


@pytest.fixture(autouse=True)
def _released_models(monkeypatch, tmp_path):
    """The shipped configs with their models unset: the released architectures' config-only folders."""
    for variable in ("WAN22_T2V_A14B", "WAN22_TI2V_5B", "VJEPA2"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SARA_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setenv("SARA_ALIGNER", "runs/stage1")  # their saliency's Stage 1 run (not read by the plan)


def plan(path, world, *overrides):
    return plan_run(load_config(Stage2Config, path, list(overrides)), world)


def test_the_released_folders_build_the_real_models_on_meta():
    counts = {}
    for name in ("wan2.2-ti2v-5b", "wan2.2-t2v-a14b"):
        config = load_config(Stage2Config, None, [f"models.wan={name}", "models.vjepa2=vjepa2-vitg-384"])
        model = build_model(config, resolve_setup(config), meta=True)
        counts[name] = [sum(p.numel() for p in dit.parameters()) for dit in model.experts.values()]
        assert all(p.is_meta for p in model.parameters())
        assert model.projectors["high"].net[-1].out_features == 1408  # to ViT-g's width
    assert counts["wan2.2-ti2v-5b"] == [4_999_787_712] and counts["wan2.2-t2v-a14b"] == [14_288_491_584] * 2
    ti2v, a14b = (read_layout(RELEASED_ROOT / name) for name in ("wan2.2-ti2v-5b", "wan2.2-t2v-a14b"))
    assert (ti2v.vae_spatial, ti2v.pixel_multiple, ti2v.expand_timesteps) == (16, (32, 32), True)
    assert (a14b.vae_spatial, a14b.pixel_multiple, a14b.boundary, a14b.experts) == (8, (16, 16), 875.0, ("high", "low"))
    widths = {
        name: VJEPA2Config.from_pretrained(RELEASED_ROOT / name).hidden_size
        for name in ("vjepa2-vitl-256", "vjepa2-vitg-384")
    }
    assert widths == {"vjepa2-vitl-256": 1024, "vjepa2-vitg-384": 1408}
    assert UMT5Config.from_pretrained(RELEASED_ROOT / "umt5-xxl").d_model == 4096  # the DiTs' text_dim


@pytest.mark.parametrize(
    "path, overrides, ulysses",
    [(TI2V, (), (1, 2)), (A14B, (), (1, 2, 4)), (A14B, (P720,), (1, 2, 4))],
    ids=["ti2v-5b", "a14b-480p", "a14b-720p"],
)
def test_the_shipped_real_configs_resolve_at_the_world_sizes_they_name(path, overrides, ulysses):
    for degree in ulysses:
        for world in (8, 16):
            resolved = plan(path, world, *overrides, f"parallel.ulysses={degree}")
            assert resolved.problems == [], (degree, world)
            assert resolved.global_batch == world // degree  # one clip per data-parallel rank a step
            assert all(shape.dit_tokens % degree == 0 for shape in resolved.shapes)
            assert resolved.memory["parameters"] > 0 and resolved.sampling is not None


def test_a14b_shapes_experts_and_sampling_are_the_real_models():
    resolved = plan(A14B, 8, P720)
    shape = resolved.shapes[0]
    assert (shape.frames, shape.height, shape.width) == (81, 720, 1280)
    assert shape.latent == (21, 90, 160) and shape.dit == (21, 45, 80) and shape.dit_tokens == 75_600
    assert shape.vfm_size == (256, 448) and shape.vfm == (20, 16, 28)  # stride 2, short side 256
    # uniform u, shift 3: σ ≥ 0.875 ⟺ u ≥ 0.7, so the high-noise expert trains 30 % of the steps
    assert resolved.experts["high"][:2] == (0.875, 1.0) and resolved.experts["high"][2] == pytest.approx(0.3, abs=0.01)
    sampling = resolved.sampling
    assert (sampling.shift, sampling.guidance_scale, sampling.guidance_scale_2, sampling.fps) == (12.0, 4.0, 3.0, 16.0)
    sixteen = plan(A14B, 16, P720)
    for part in ("gradients", "optimizer"):  # sharded: half as much per GPU on twice the GPUs
        assert sixteen.memory[part] == pytest.approx(resolved.memory[part] / 2, rel=1e-6)
    whole = 2 * sixteen.memory["parameters"] - resolved.memory["parameters"]  # what stays whole on every rank
    # on each of the 2 experts, a block's fp32 norm2 and modulation table (8 × 5120), its attentions' RMS
    # norms (4 × 5120, frozen in bf16), and the output's fp32 table (2 × 5120)
    assert whole * 2**30 == pytest.approx(2 * (40 * (8 * 5120 * 4 + 4 * 5120 * 2) + 2 * 5120 * 4))
    assert sixteen.memory["gathered"] == resolved.memory["gathered"]  # two blocks, whole, whatever the world
    fp32_base = 2 * 14.29e9 * 4 / 8 / 2**30  # GiB per GPU of both experts' bases in fp32
    assert 0.5 * fp32_base < resolved.memory["parameters"] < 0.55 * fp32_base  # the LoRA run's base is bf16


def test_gradients_accumulated_unreduced_are_whole_on_every_rank():
    sharded = plan(A14B, 8, P720)
    final = plan(A14B, 8, P720, "optim.accumulate=4")  # parallel.accumulate_sync: final, the default
    every = plan(A14B, 8, P720, "optim.accumulate=4", "parallel.accumulate_sync=every")
    assert every.memory["gradients"] == pytest.approx(sharded.memory["gradients"], rel=1e-9)
    assert final.memory["gradients"] == pytest.approx(8 * sharded.memory["gradients"], rel=1e-6)
    assert final.memory["optimizer"] == pytest.approx(sharded.memory["optimizer"], rel=1e-9)


def test_every_problem_is_one_line_naming_its_key(capsys):
    resolved = plan(A14B, 8, "parallel.ulysses=16", "validation.loss_every=10", "validation.loss_clips=3")
    assert resolved.problems == [
        "parallel: dp_replicate 1 × ulysses 16 does not divide the world of 8 processes",
        "parallel.ulysses: 16 does not divide the DiT's 40 attention heads",
        "data.buckets: 81 frames of 480×832: 32760 DiT tokens do not split over parallel.ulysses = 16 ranks; "
        "choose a size or frame count whose token count divides by 16",
        "data.buckets: 81 frames of 832×480: 32760 DiT tokens do not split over parallel.ulysses = 16 ranks; "
        "choose a size or frame count whose token count divides by 16",
        "validation.loss_every: needs validation.heldout, a manifest of held-out clips",
    ]
    assert plan(TI2V, 16, "parallel.ulysses=8").problems == [
        "data.buckets: 121 frames of 960×960: 27900 DiT tokens do not split over parallel.ulysses = 8 ranks; "
        "choose a size or frame count whose token count divides by 8"
    ]
    assert plan(A14B, 16, "validation.heldout=h.jsonl", "validation.loss_every=10").problems == [
        "validation.loss_clips: 8 clips do not split over 16 data-parallel ranks"
    ]
    assert main(["stage2", "plan", "--config", str(TI2V), "parallel.ulysses=3", "--world", "8", "12"]) == 2
    err = capsys.readouterr().err.splitlines()
    split = "DiT tokens do not split over parallel.ulysses = 3 ranks; choose a size or frame count whose token count"
    assert err == [
        "sara: error: 8 processes: parallel: dp_replicate 1 × ulysses 3 does not divide the world of 8 processes",
        f"sara: error: 8 processes: data.buckets: 121 frames of 704×1280: 27280 {split} divides by 3",
        f"sara: error: 8 processes: data.buckets: 121 frames of 1280×704: 27280 {split} divides by 3",
        f"sara: error: 12 processes: data.buckets: 121 frames of 704×1280: 27280 {split} divides by 3",
        f"sara: error: 12 processes: data.buckets: 121 frames of 1280×704: 27280 {split} divides by 3",
    ]  # 24 heads divide by 3, and so do the 960 × 960 clip's 27 900 tokens


def test_frame_sizes_follow_the_folders_vae_and_patch():
    # A14B: 8× VAE × patch 2 = 16 pixels a token side; TI2V-5B: 16 × 2 = 32
    assert plan(A14B, 8, "data.buckets=[[624,624]]").problems == []
    (problem,) = plan(TI2V, 8, "data.buckets=[[624,624]]").problems
    assert problem == (
        "data.buckets: [624, 624] must be [H, W] with H a multiple of 32 and W of 32 "
        "(pixels per DiT token of wan2.2-ti2v-5b: VAE 16× × patch (2, 2))"
    )
    (problem,) = plan(None, 1, "data.size=72", "objective.align.saliency=masks").problems  # tiny: 8× VAE, 2 × 2 patches
    assert problem.startswith("data.size: [72, 72] must be [H, W] with H a multiple of 16 and W of 16")


def test_shutdown_timeout_covers_the_checkpoint_each_rank_writes(capsys):
    full = plan(TI2V, 8)  # every weight trained, with AdamW and an EMA: 16 bytes a parameter
    assert full.checkpoint_gib == pytest.approx(5.0e9 * 16 / 8 / 2**30, rel=0.01)
    assert main(["stage2", "plan", "--config", str(TI2V), "--world", "8", "--shutdown-timeout"]) == 0
    assert capsys.readouterr().out.strip() == str(full.shutdown_timeout)
    assert full.shutdown_timeout >= 180 + full.checkpoint_gib / 0.5
    assert plan(TI2V, 1).shutdown_timeout > full.shutdown_timeout  # one rank writes it all


def test_a_sara_run_needs_the_aligner_its_saliency_comes_from(monkeypatch):
    monkeypatch.delenv("SARA_ALIGNER")
    (problem,) = plan(A14B, 8).problems
    assert problem.startswith("models.aligner: objective.align.saliency=aligner needs the Stage 1 run")
    assert plan(A14B, 8, "objective.align.saliency=masks").problems == []


def test_training_refuses_a_run_that_cannot_start_before_any_weight_is_read(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [f"out_dir={out}", f"models.tiny_root={tmp_path}", "validation.loss_every=3", "log_every=2"]
    overrides += ["objective.align.saliency=masks"]
    assert main(["stage2", "train", *overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sara:")]  # after the presets' bars
    assert err == [
        "sara: error: validation.loss_every: needs validation.heldout, a manifest of held-out clips",
        "sara: error: validation.loss_every: 3 must be a multiple of log_every (2)",
    ]
    assert not out.exists()  # refused before the run folder, the model or the data


def test_a_config_only_folder_is_refused_where_weights_would_load(tmp_path):
    config = load_config(Stage2Config, None, ["models.wan=wan2.2-ti2v-5b", f"models.tiny_root={tmp_path}"])
    with pytest.raises(ValueError, match="models.wan: wan2.2-ti2v-5b holds the released model's configs only"):
        build_model(config, resolve_setup(config), compute_dtype=torch.bfloat16)
    assert resolve("vjepa2-vitl-256", "vjepa2", tmp_path) == RELEASED_ROOT / "vjepa2-vitl-256"
