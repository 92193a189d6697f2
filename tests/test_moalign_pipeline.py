"""MoAlign end to end on tiny presets: token flow on the teacher's grid, DIS and exact flow,
precompute storing the flow, `sara moalign train` fitting a head that beats predicting no
motion, and Stage 2 training with `align.mode=moalign` against that head."""

import json

import numpy as np
import pytest
import torch

from sara.cli import main
from sara.data.manifest import load_manifest
from sara.data.video import read_video
from sara.models.motion import load_motion_head
from sara.shapes.flow import exact_flow
from sara.stage2.align import VfmView
from sara.stage2.cache import FeatureCache
from sara.stage2.flow import clip_flow, dis_flow, token_flow


def test_token_flow_reads_the_teachers_frames_and_scales_with_its_input():
    # 9 frames: the teacher reads 1…8 in tubelets (1,2) … (7,8); frame f takes flow[f − 1]
    flow = torch.zeros(8, 32, 64, 2)  # not square
    flow[:, :, :, 1] = torch.arange(8.0)[:, None, None]  # dx = t for the step t → t+1
    tokens = token_flow(flow, VfmView(tubelet=2, patch=16))
    assert tokens.shape == (4, 2, 4, 2)
    torch.testing.assert_close(tokens[:, 0, 0, 1], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    assert not tokens[..., 0].any()
    half = token_flow(flow, VfmView(tubelet=2, patch=16, short_side=16))  # the teacher's input halved
    assert half.shape == (4, 1, 2, 2)
    torch.testing.assert_close(half[:, 0, 0, 1], torch.tensor([0.5, 2.5, 4.5, 6.5]) / 2)  # vectors halved too


def test_dis_finds_a_moving_square_and_a_still_background():
    frames = torch.zeros(3, 3, 64, 64, dtype=torch.uint8)
    for t in range(3):
        frames[t, :, 20:36, 16 + 3 * t : 32 + 3 * t] = 255  # right by 3 pixels a frame
    flow = dis_flow(frames)
    assert flow.shape == (2, 64, 64, 2)
    inside = flow[0, 24:32, 20:28]
    assert abs(inside[..., 1].mean().item() - 3) < 0.75 and abs(inside[..., 0].mean().item()) < 0.5
    assert flow[0, 50:, 50:].abs().max() < 0.5


def test_clip_flow_is_exact_for_a_whole_shapes_clip(shapes_world):
    world = shapes_world(num=2, seed=8, frames=9, size=64, heldout_fraction=0.0)
    record = load_manifest(world / "train.jsonl").records[0]
    frames = read_video(world / record.video).permute(0, 3, 1, 2)  # (T, 3, H, W)
    exact = clip_flow(record, frames)
    np.testing.assert_array_equal(exact.numpy(), exact_flow(record.model_extra["render"]))
    estimated = clip_flow(record, frames[:, :, :, :48].contiguous())  # cropped: no longer the rendered clip
    assert estimated.shape == (8, 64, 48, 2) and not torch.equal(estimated, exact[:, :, :48])


@pytest.mark.slow
def test_head_is_fitted_on_the_cache_and_stage2_aligns_to_it(shapes_world, tmp_path):
    world = shapes_world(num=6, seed=5, frames=9, size=64, heldout_fraction=0.0)
    args = [
        f"out_dir={tmp_path / 'run'}", f"data.train={world / 'train.jsonl'}", "data.frames=9", "data.buckets=[[64,96]]",
        f"models.tiny_root={tmp_path / 'models'}", "models.text_length=32", f"precompute.cache_dir={tmp_path / 'cache'}",
        "precompute.flow=true", "objective.align.mode=moalign", "objective.align.motion.steps=60",
        "optim.steps=2", "optim.batch_size=2", "optim.warmup_steps=1", "log_every=1", "save_every=2",
    ]  # fmt: skip
    assert main(["stage2", "precompute", *args]) == 0
    cache = FeatureCache(tmp_path / "cache")
    assert cache[0]["flow"].shape == (4, 4, 6, 2)  # the teacher's grid of a 9-frame 64 × 96 clip
    assert main(["stage2", "train", *args, f"out_dir={tmp_path / 'early'}"]) == 2  # no head yet: one line

    assert main(["moalign", "train", *args]) == 0
    head_folder = tmp_path / "cache" / "motion_head"
    fitted = json.loads((head_folder / "config.json").read_text())["fitted"]
    error = fitted["end_point_error"]
    assert fitted["steps"] == 60 and error["head"] < error["zero flow"]
    head = load_motion_head(head_folder)
    assert head.dim == 64 and not any(p.requires_grad for p in head.parameters())

    assert main(["stage2", "train", *args]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2 and all(row["align"] > 0 for row in history)
