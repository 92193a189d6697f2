"""The synthetic shapes world: determinism, masks, captions, foreground share, files."""

import json

import numpy as np
import torch

from sara.data.manifest import load_manifest
from sara.data.masks import load_mask, pool_to_grid
from sara.data.synthetic import SynthSpec, render_clip, synthesize
from sara.data.video import decode_clip, transform_masks

SPEC = SynthSpec(num=6, seed=3, frames=9, size=64, heldout_fraction=0.34)


def test_render_is_a_function_of_seed_and_index():
    first, again, other = render_clip(SPEC, 2), render_clip(SPEC, 2), render_clip(SPEC, 3)
    assert np.array_equal(first[0], again[0]) and first[2] == again[2]
    assert not np.array_equal(first[0], other[0])


def test_masks_are_visible_parts_and_captions_name_every_entity():
    crossings = 0
    for index in range(20):
        video, masks, caption, prompts = render_clip(SPEC, index)
        assert video.shape == (9, 64, 64, 3) and video.dtype == np.uint8
        assert 1 <= len(masks) == len(prompts) <= 3
        stacked = np.stack(masks)
        assert stacked.sum(axis=0).max() <= 1  # occluded parts belong to the shape in front only
        assert len(set(p.split()[0] for p in prompts)) == len(prompts)  # distinct colours
        assert [c["name"] for c in caption["cast"]] == prompts
        for prompt in prompts:
            assert prompt in caption["shots"][0]
        crossings += "passes in front" in caption["shots"][0]
    assert crossings > 0  # occlusions happen and are told


def test_foreground_share_of_the_token_grid_is_near_the_target():
    spec = SynthSpec(frames=9, size=128)
    shares = []
    for index in range(40):
        _, masks, _, _ = render_clip(spec, index)
        union = torch.from_numpy(np.any(np.stack(masks), axis=0))
        shares.append((pool_to_grid(union, 2, 16) > 0.5).float().mean().item())
    assert 0.42 < np.mean(shares) < 0.58


def test_synthesize_writes_clips_masks_and_splits(tmp_path):
    summary = synthesize(SPEC, tmp_path, workers=2, progress=False)
    assert summary["clips"] == {"train": 4, "heldout": 2}
    train, heldout = load_manifest(tmp_path / "train.jsonl"), load_manifest(tmp_path / "heldout.jsonl")
    ids = [r.model_extra["id"] for r in train.records + heldout.records]
    assert sorted(ids) == [f"clip_{i:05d}" for i in range(6)]
    record = train.records[0]
    clip = decode_clip(train.resolve(record.video), 9, (64, 64))
    assert clip.range_frames == 9
    for entity in record.entities:
        mask = load_mask(train.resolve(entity.mask))
        assert mask.shape == (9, 64, 64)
        assert transform_masks(mask, clip, (64, 64)).shape == (9, 64, 64)
    assert record.prompt().startswith(record.caption.global_setup)
    again = tmp_path / "again"
    synthesize(SPEC, again, workers=1, progress=False)
    assert (again / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["fg_fraction"] > 0
