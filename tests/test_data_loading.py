"""Datasets, buckets and the sampler; bad samples skipped, counted and bounded; `sara data check`."""

import json
import logging

import pytest
import torch
from torch.utils.data import DataLoader

from sara.cli import main
from sara.config.clips import ClipTiming
from sara.data import datasets
from sara.data.buckets import Bucket, BucketBatchSampler, assign_bucket
from sara.data.check import check_manifest
from sara.data.datasets import BadSamples, Skipped, Stage1Dataset, Stage2Dataset, TooManyBadSamples, collate
from sara.data.manifest import load_manifest
from sara.data.masks import load_mask, save_mask
from sara.shapes.render import SynthSpec, synthesize

BUCKETS = [Bucket(8, 32, 32), Bucket(8, 32, 48)]
TIMING = ClipTiming(fps=16, window="centre")  # the world's own rate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small shapes world with one record broken in each way the data layer knows."""
    root = tmp_path_factory.mktemp("world")
    synthesize(SynthSpec(num=10, seed=1, frames=9, size=32, heldout_fraction=0.0), root, workers=1, progress=False)
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    good = len(records)
    broken = [dict(records[i], id=f"broken_{i}") for i in range(7)]
    broken[0]["video"] = "videos/missing.mp4"
    (root / "videos/empty.mp4").write_bytes(b"")
    broken[1]["video"] = "videos/empty.mp4"
    data = (root / records[2]["video"]).read_bytes()
    (root / "videos/truncated.mp4").write_bytes(data[: len(data) // 3])
    broken[2]["video"] = "videos/truncated.mp4"
    (root / "videos/junk.mp4").write_bytes(b"this is not a video" * 40)
    broken[3]["video"] = "videos/junk.mp4"
    broken[4]["entities"] = [{"prompt": "ghost", "mask": "masks/missing.npz"}]
    save_mask(root / "masks/short.npz", load_mask(root / records[5]["entities"][0]["mask"])[:5])  # 5 of 9 frames
    broken[5]["entities"] = [{"prompt": "short", "mask": "masks/short.npz"}]
    broken[6]["caption"] = ""
    lines = [json.dumps(r) for r in records + broken]
    (root / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    return root, good


def test_buckets_by_aspect_ratio():
    assert assign_bucket(32, 32, BUCKETS) == 0
    assert assign_bucket(720, 1280, BUCKETS) == 1
    assert assign_bucket(1280, 720, BUCKETS) == 0


def test_buckets_by_length_then_aspect_ratio():
    """Several lengths: the longest the clip holds, then the closest aspect; too short for
    all: the shortest (loading names it); unknown length: any bucket of the right aspect."""
    buckets = [Bucket(f, h, w) for f in (17, 33, 49) for h, w in ((64, 64), (64, 128))]
    assert buckets[assign_bucket(64, 64, buckets, available=40)] == Bucket(33, 64, 64)
    assert buckets[assign_bucket(720, 1280, buckets, available=49)] == Bucket(49, 64, 128)
    assert buckets[assign_bucket(64, 64, buckets, available=200)] == Bucket(49, 64, 64)
    assert buckets[assign_bucket(64, 64, buckets, available=9)] == Bucket(17, 64, 64)


def test_sampler_same_bucket_deterministic_and_disjoint_across_ranks():
    bucket_of = [i % 3 for i in range(100)]
    epoch0 = list(BucketBatchSampler(bucket_of, 4, seed=5))
    assert epoch0 == list(BucketBatchSampler(bucket_of, 4, seed=5))
    sampler = BucketBatchSampler(bucket_of, 4, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    for batch in epoch0:
        assert len(batch) == 4 and len({bucket_of[i] for i in batch}) == 1
    ranks = [list(BucketBatchSampler(bucket_of, 4, seed=5, rank=r, world_size=3)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 == len({len(BucketBatchSampler(bucket_of, 4, 5, r, 3)) for r in range(3)})
    seen = [i for rank in ranks for batch in rank for i in batch]
    assert len(seen) == len(set(seen))
    with pytest.raises(ValueError, match="rank: must be in"):
        BucketBatchSampler(bucket_of, 4, rank=3, world_size=3)


def test_stage1_samples_are_clip_entity_pairs(world):
    root, _ = world
    manifest = load_manifest(root / "train.jsonl")
    dataset = Stage1Dataset(manifest, BUCKETS, TIMING)
    assert len(dataset) == sum(len(r.entities) for r in manifest.records)
    item = dataset[0]
    assert item["frames"].shape == (8, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert item["masks"].shape == (8, 32, 32) and 0 <= item["masks"].min() and item["masks"].max() <= 1
    assert item["masks"].sum() > 0
    assert item["prompt"] in item["caption"]


def test_loader_with_workers_skips_bad_samples_and_counts_them(world, caplog):
    root, good = world
    manifest = load_manifest(root / "mixed.jsonl")
    dataset = Stage2Dataset(manifest, BUCKETS, TIMING)
    sampler = BucketBatchSampler(dataset.bucket_of, batch_size=3, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, collate_fn=collate)
    tracker = BadSamples(max_fraction=0.6, min_seen=1)
    frames = 0
    with caplog.at_level(logging.WARNING, logger="sara.data.datasets"):
        for batch in loader:
            tracker.update(batch)
            if batch["size"]:
                assert batch["frames"].shape[1:] == (8, 3, 32, 32)
                frames += batch["size"]
    skipped = tracker.end_epoch(0)
    assert frames + skipped == len(sampler) * 3  # every sample either loaded or counted
    assert skipped > 0 and skipped == len(caplog.records)  # one warning line per skip
    for record in caplog.records:
        assert record.getMessage().startswith("skipped mixed.jsonl: record ")
        assert "(broken_" in record.getMessage()  # only the broken records are skipped


def test_each_bad_record_gives_its_reason(world):
    root, good = world
    manifest = load_manifest(root / "mixed.jsonl")
    stage2, stage1 = Stage2Dataset(manifest, BUCKETS, TIMING), Stage1Dataset(manifest, BUCKETS, TIMING)
    reasons = [stage2[good + i].reason for i in (0, 1, 2, 3, 6)]
    assert reasons[0] == "video: video file not found"
    assert reasons[1] == "video: video file is empty"
    assert reasons[2].startswith("video:") and reasons[3].startswith("video: cannot be decoded")
    assert reasons[4] == "caption: empty"
    by_record = {stage1.samples[i][0]: stage1[i] for i in range(len(stage1))}
    assert by_record[good + 4].reason == "entities.0.mask: mask file not found"
    assert by_record[good + 5].reason.startswith("entities.0.mask: mask shape (5, 32, 32) does not match")
    too_long = Stage2Dataset(manifest, [Bucket(12, 32, 32)], TIMING)[0]
    assert (
        isinstance(too_long, Skipped)
        and too_long.reason == "video: has 9 frames at 16 fps in range, fewer than the 12 asked for"
    )


def test_too_many_bad_samples_stop_the_run():
    tracker = BadSamples(max_fraction=0.05, min_seen=10)
    tracker.update({"skipped": [], "size": 8})
    tracker.update({"skipped": [Skipped("m.jsonl: record 0", "video: gone")], "size": 0})  # 1 of 9: no verdict yet
    with pytest.raises(TooManyBadSamples, match=r"1 of 10 samples could not be loaded \(10.0 %\)"):
        tracker.update({"skipped": [], "size": 1})


def test_data_check_reports_every_problem(world, capsys):
    root, good = world
    report = check_manifest(load_manifest(root / "mixed.jsonl"), progress=False)
    assert report.bad_records == {good + i for i in range(7)}
    assert main(["data", "check", str(root / "mixed.jsonl")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        out[-2]
        == f"checked {good + 7} records, {report.entities} entities (0 without masks): 7 problem(s) in 7 record(s)"
    )
    assert (
        out[-1]
        == f"facts of {good + 3} clips written to {root / 'mixed.facts.json'}: runs read them instead of every video"
    )
    assert any("(broken_0): video: video file not found" in line for line in out)
    assert any("(broken_5): entities.0.mask: shape (5, 32, 32) does not match" in line for line in out)
    assert main(["data", "check", str(root / "train.jsonl")]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root / "train.jsonl"), "--frames", "12", "--fps", "16"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("video: has 9 frames at 16 fps in range, fewer than the window of 12")
    assert out[-2].endswith("10 problem(s) in 10 record(s), 10 too short for the window")
    assert main(["data", "check", str(root / "train.jsonl"), "--frames", "9", "--fps", "16"]) == 0


def test_records_without_an_id_are_named_by_their_video(world, capsys):
    root, _ = world
    records = [json.loads(line) for line in (root / "mixed.jsonl").read_text().splitlines()]
    anonymous = [{k: v for k, v in r.items() if k != "id"} for r in records]
    (root / "anonymous.jsonl").write_text("".join(json.dumps(r) + "\n" for r in anonymous))
    assert main(["data", "check", str(root / "anonymous.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "anonymous.jsonl: record 10 (videos/missing.mp4): video: video file not found" in out


def test_budget_of_a_manifest_pools_ground_truth_masks(world, capsys):
    root, _ = world
    assert main(["budget", str(root / "train.jsonl"), "--frames", "8", "--size", "32", "--json"]) == 0
    budget = json.loads(capsys.readouterr().out)
    assert budget["tokens"] == 10 * 4 * 2 * 2  # 10 clips × (8/2) × (32/16)²
    assert 0.2 < budget["fg_fraction"] < 0.8


def test_facts_written_by_check_place_every_clip_without_opening_a_video(world, tmp_path, monkeypatch, caplog):
    """`sara data check` writes each clip's span; a dataset then reads the facts file alone
    and places every record in the bucket probing its video gives, at any rate; a record
    not in the file is probed, and a damaged file costs probing, not the run."""
    root, good = world
    records = [json.loads(line) for line in (root / "mixed.jsonl").read_text().splitlines()]
    for record in records:
        record["video"] = str(root / record["video"])
    for i, record in enumerate(records[:good]):  # ranges and rates of every kind
        record.update(
            [{}, {"start": 0.1}, {"end": 0.35}, {"fps": 9.0}, {"start": 0.05, "end": 0.5, "fps": 24.0}][i % 5]
        )
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    manifest = load_manifest(tmp_path / "m.jsonl")
    buckets = [Bucket(f, h, w) for f in (3, 5, 8) for h, w in ((32, 32), (32, 48))]

    def placed(timing):
        return Stage2Dataset(manifest, buckets, timing).bucket_of

    timings = [ClipTiming(fps=16, window="centre"), ClipTiming(fps=None), ClipTiming(fps=7)]
    probed = [placed(t) for t in timings]
    assert len({tuple(p) for p in probed}) > 1  # the rate moves clips between lengths
    report = check_manifest(manifest, progress=False)
    assert report.facts == tmp_path / "m.facts.json" and len(report.spans) == good + 3  # all but 4 bad videos
    opened = set()
    for name in ("probe_span", "probe_size"):
        probe = getattr(datasets, name)
        monkeypatch.setattr(datasets, name, lambda path, *a, probe=probe: opened.add(path.name) or probe(path, *a))
    assert [placed(t) for t in timings] == probed
    assert opened == {"missing.mp4", "empty.mp4", "truncated.mp4", "junk.mp4"}  # only what is not in the facts
    monkeypatch.undo()

    manifest.records[0] = manifest.records[0].model_copy(update={"end": 0.3})  # edited: not in the facts
    with caplog.at_level(logging.INFO, logger="sara.data.datasets"):
        assert placed(timings[0])[1:] == probed[0][1:]
    assert "5 of 17 records probed (not in its facts file)" in caplog.text  # it and the 4 bad videos
    (tmp_path / "m.facts.json").write_text('{"version": 1, "video": [')
    with caplog.at_level(logging.WARNING, logger="sara.data.facts"):
        assert placed(timings[0])[1:] == probed[0][1:]
    assert "m.facts.json: cannot be read" in caplog.text
