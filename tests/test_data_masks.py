"""`sara data masks`: SAM 3 (tiny preset of the real classes) → stored masks, manifest update, resume.

The tiny SAM 3 has random weights, so these tests check shapes, storage and bookkeeping,
not mask quality.
"""

import importlib
import json

import pytest
import torch

from sara.cli import main
from sara.data.check import check_manifest
from sara.data.extract_masks import extract_masks
from sara.data.manifest import load_manifest
from sara.data.masks import load_mask
from sara.data.video import decode_clip
from sara.models.presets import TINY
from sara.models.sam3 import Sam3Segmenter, save_tiny
from sara.shapes.render import SynthSpec, synthesize


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("sam3"), seed=0)


@pytest.fixture(scope="module")
def segmenter(sam3_dir):
    return Sam3Segmenter(sam3_dir)


@pytest.fixture
def world(tmp_path):
    """Three clips whose entities have prompts but no masks yet."""
    synthesize(SynthSpec(num=3, seed=2, frames=6, size=48, heldout_fraction=0.0), tmp_path, workers=1, progress=False)
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    for record in records:
        for entity in record["entities"]:
            del entity["mask"]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return tmp_path / "train.jsonl"


class Counting:
    """The real segmenter, counting calls and failing on call ``fail_on`` (a crash mid-run)."""

    def __init__(self, inner, fail_on=None):
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def segment(self, frames, prompts):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        return self.inner.segment(frames, prompts)


def test_segment_shapes_duplicates_and_determinism(segmenter):
    frames = torch.randint(0, 256, (5, 3, 40, 56), dtype=torch.uint8)  # not square, not the model's size
    masks = segmenter.segment(frames, ["red square", "blue circle", "red square"])
    assert masks.shape == (3, 5, 40, 56) and masks.dtype == torch.bool
    assert torch.equal(masks[0], masks[2])
    assert masks.any(), "thresholds of the tiny preset are zero: random weights still track objects"
    assert torch.equal(masks, segmenter.segment(frames, ["red square", "blue circle", "red square"]))


def test_masks_stored_per_entity_and_manifest_updated(world, segmenter):
    manifest = load_manifest(world)
    stats = extract_masks(manifest, segmenter, world.parent / "sam3_masks", progress=False)
    assert (stats.done, stats.already, stats.failed) == (3, 0, [])
    reloaded = load_manifest(world)
    assert check_manifest(reloaded, progress=False).problems == []
    for record in reloaded.records:
        clip = decode_clip(reloaded.resolve(record.video), None, None)
        for entity in record.entities:
            assert entity.mask.startswith("sam3_masks/")
            mask = load_mask(reloaded.resolve(entity.mask))
            assert mask.shape == (clip.range_frames, *clip.source_size)
            raw_bytes = mask.numel()  # one byte per pixel unpacked
            assert reloaded.resolve(entity.mask).stat().st_size < raw_bytes / 4  # bit-packed and compressed


def test_rerun_skips_finished_clips_and_resumes_after_a_crash(world, segmenter):
    crashing = Counting(segmenter, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        extract_masks(load_manifest(world), crashing, world.parent / "masks_sam3", save_every=100, progress=False)
    done = [r for r in load_manifest(world).records if all(e.mask for e in r.entities)]
    assert len(done) == 1, "the clip finished before the crash is in the manifest"

    resumed = Counting(segmenter)
    stats = extract_masks(load_manifest(world), resumed, world.parent / "masks_sam3", progress=False)
    assert (resumed.calls, stats.done, stats.already) == (2, 2, 1)

    again = Counting(segmenter)
    assert extract_masks(load_manifest(world), again, world.parent / "masks_sam3", progress=False).already == 3
    assert again.calls == 0


def test_missing_mask_file_makes_a_clip_unfinished(world, segmenter):
    manifest = load_manifest(world)
    extract_masks(manifest, segmenter, world.parent / "m", progress=False)
    manifest.resolve(manifest.records[1].entities[0].mask).unlink()
    counting = Counting(segmenter)
    stats = extract_masks(load_manifest(world), counting, world.parent / "m", progress=False)
    assert (counting.calls, stats.done, stats.already) == (1, 1, 2)


def test_cli_segments_and_names_unreadable_clips(world, sam3_dir, capsys):
    records = world.read_text().splitlines()
    broken = dict(json.loads(records[0]), video="videos/missing.mp4", id="gone")
    world.write_text("\n".join([*records, json.dumps(broken)]) + "\n")
    code = main(["data", "masks", str(world), "--weights", str(sam3_dir), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert "segmented 3 clips" in captured.out and "1 unreadable" in captured.out
    assert "train.jsonl: record 3 (gone): video: video file not found" in captured.err
    assert all(e.mask for r in load_manifest(world).records[:3] for e in r.entities)


def test_cli_rejects_a_folder_without_weights(world, tmp_path, capsys):
    assert main(["data", "masks", str(world), "--weights", str(tmp_path / "nothing")]) == 2
    assert "not a SAM 3 weights folder" in capsys.readouterr().err


def test_every_tiny_preset_names_a_writer():
    for name, (module, writer, _) in TINY.items():
        assert callable(getattr(importlib.import_module(module), writer)), name
