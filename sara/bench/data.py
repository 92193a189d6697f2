"""``sara bench data``: the input pipeline of Stage 2 at data-set sizes a CPU can write.

1. **Start-up**: a synthetic cache of ``N`` clips (tiny tensors in the real layout and index:
   shards of 64 clips, each clip's latents, caption states, teacher tokens and mask saliency)
   is opened as training opens it — :class:`~sara.stage2.clips.CachedClips`, the batch plan,
   the loader — and timed to the first batch, in a fresh process per case; ``from launch``
   adds that process's start and imports. ``index``: the
   index as precompute writes it; ``headers``: the same cache with an index of shard names
   alone (caches written before shapes were indexed), whose every shard header is read at
   start-up, as every cache's was before.
2. **Steady state**: batches a second drawn from the largest cache through the loader, read
   in the step (``workers`` 0) and read ahead by loader processes.

3. **Online start-up**: a manifest of ``N`` records (one small video each, the same file) is
   opened as an online run opens it — the manifest parsed, every record placed in a bucket
   of several lengths — from its facts file (``facts``, as ``sara data check`` writes it) and,
   at the smallest ``N``, from the videos' headers and timelines (``videos``).

The data wait of a training step is measured by ``sara bench step`` (its ``data wait``
column, with ``--workers``).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import time
from pathlib import Path

import torch

from sara.config import load_config
from sara.config.clips import ClipTiming
from sara.config.stage2 import Stage2Config
from sara.data.buckets import Bucket
from sara.data.datasets import Stage2Dataset
from sara.data.facts import facts_path, write_facts
from sara.data.manifest import Manifest, Record, load_manifest
from sara.data.video import probe_span, write_video
from sara.parallel.world import World
from sara.stage2.cache import fingerprint
from sara.stage2.cache_index import Part, from_columns, merge_parts
from sara.stage2.clips import CachedClips
from sara.stage2.loader import StepBatches, StepLoader
from sara.stage2.step import local_rows
from sara.trainer.batches import BucketSteps

SHARD = 64  # clips a shard, precompute's default
BATCH = 8
MANIFEST_BUCKETS = [Bucket(5, 32, 32), Bucket(9, 32, 32), Bucket(9, 32, 48)]  # two lengths: timelines are read


def _config(cache: Path, workers: int = 0) -> Stage2Config:
    overrides = [
        f"precompute.cache_dir={cache}", f"data.train={cache / 'none.jsonl'}", "objective.align.mode=sara",
        "objective.align.saliency=masks", f"optim.batch_size={BATCH}", f"data.num_workers={workers}",
        "optim.steps=1000000",
    ]  # fmt: skip
    return load_config(Stage2Config, None, overrides)


def write_cache(folder: Path, clips: int) -> Path:
    """A cache of ``clips`` synthetic clips (two latent shapes, so that batches are bucketed),
    with its ``index.json`` and, beside it, ``index-headers.json`` naming shards alone."""
    if (folder / "index.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    part, pending = Part(folder, 0), {}
    g = torch.Generator().manual_seed(0)
    for record in range(clips):
        width = 4 + record % 2
        clip = {
            "latents": torch.randn(4, 2, 4, width, generator=g),
            "text": torch.randn(6, 8, generator=g),
            "vfm": torch.randn(4 * width, 8, generator=g),
            "mask_saliency": torch.rand(4 * width, generator=g),
        }
        pending |= {f"{record}/{key}": value.to(torch.bfloat16) for key, value in clip.items()}
        if (record + 1) % SHARD == 0 or record + 1 == clips:
            part.flush(pending)
    merge_parts(folder, {"settings": fingerprint(_config(folder)), "clips": {}}, header=None)
    index = json.loads((folder / "index.json").read_text())
    index["clips"] = {record: row["shard"] for record, row in from_columns(index["clips"]).items()}
    (folder / "index-headers.json").write_text(json.dumps(index))
    return folder


def _startup(folder: str, index: str) -> dict:
    """Seconds from opening the cache to the first batch, in this (fresh) process."""
    if index == "headers":  # the cache seen through the index of shard names alone
        (Path(folder) / "index.json").rename(Path(folder) / "index-shapes.json")
        (Path(folder) / "index-headers.json").rename(Path(folder) / "index.json")
    try:
        config = _config(Path(folder))
        world = World(rank=0, size=1, device=torch.device("cpu"))
        start = time.perf_counter()
        clips = CachedClips(config)
        steps_of = BucketSteps(clips.bucket_of, BATCH, config.seed)
        loader = StepLoader(StepBatches(clips.reader, steps_of, local_rows(BATCH, world)), 1, config.data, world.device)
        clips.to_device(loader(0), world.device)
        return {"startup_s": time.perf_counter() - start}
    finally:
        if index == "headers":
            (Path(folder) / "index.json").rename(Path(folder) / "index-headers.json")
            (Path(folder) / "index-shapes.json").rename(Path(folder) / "index.json")


def _steady(folder: str, workers: int, steps: int) -> dict:
    """Batches a second over ``steps`` steps after the first, read by ``workers`` processes."""
    config = _config(Path(folder), workers)
    clips = CachedClips(config)
    steps_of = BucketSteps(clips.bucket_of, BATCH, config.seed)
    device = torch.device("cpu")
    loader = StepLoader(StepBatches(clips.reader, steps_of, slice(None)), steps + 1, config.data, device)
    clips.to_device(loader(0), device)  # the workers started
    start = time.perf_counter()
    for step in range(1, steps + 1):
        clips.to_device(loader(step), device)
    return {"batches_per_s": steps / (time.perf_counter() - start)}


def write_manifest(folder: Path, clips: int) -> Path:
    """A manifest of ``clips`` records of one small video, with its facts file."""
    path = folder / "train.jsonl"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "clip.mp4", torch.zeros(9, 3, 32, 48, dtype=torch.uint8), fps=16)
    records = [Record(video="clip.mp4", caption="a red circle moves left", id=f"clip_{i:06d}") for i in range(clips)]
    manifest = Manifest(path, records)
    manifest.save()
    write_facts(manifest, [probe_span(folder / "clip.mp4", None, None)] * clips)
    return path


def _online(path: str, source: str) -> dict:
    """Seconds to open an online run's clips in this (fresh) process."""
    if source == "videos":  # the manifest seen without its facts file
        facts = facts_path(load_manifest(path))
        facts.rename(facts.with_suffix(".off"))
    try:
        start = time.perf_counter()
        dataset = Stage2Dataset(load_manifest(path), MANIFEST_BUCKETS, ClipTiming(fps=16))
        assert len(dataset.bucket_of) == len(dataset)
        return {"startup_s": time.perf_counter() - start}
    finally:
        if source == "videos":
            facts.with_suffix(".off").rename(facts)


def _fresh(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def bench_data(root: Path, sizes: list[int], workers: list[int], steps: int = 200, progress: bool = True) -> dict:
    """``{"startup": [{clips, index, startup_s, process_s}], "steady": [{clips, workers, batches_per_s}],
    "online": [{clips, source, startup_s}]}``."""
    from tqdm import tqdm

    startup, steady = [], []
    for clips in tqdm(sizes, desc="bench data", disable=not progress):
        folder = write_cache(root / f"cache-{clips}", clips)
        for index in ("index", "headers"):
            start = time.perf_counter()  # the process's own start and imports, too
            figures = _fresh(_startup, str(folder), index)
            startup.append({"clips": clips, "index": index, **figures, "process_s": time.perf_counter() - start})
    largest = root / f"cache-{max(sizes)}"
    for count in workers:
        steady.append({"clips": max(sizes), "workers": count, **_fresh(_steady, str(largest), count, steps)})
    online = []
    for clips in sizes:
        path = write_manifest(root / f"manifest-{clips}", clips)
        for source in ("facts", "videos") if clips == min(sizes) else ("facts",):
            online.append({"clips": clips, "source": source, **_fresh(_online, str(path), source)})
    return {"startup": startup, "steady": steady, "online": online}


def format_data(figures: dict) -> str:
    """The start-up table (each size × the smallest's, per index) and the steady-state table."""
    header = f"{'clips':>8} | {'index':>8} | {'start-up s':>10} | {'× smallest':>10} | {'from launch s':>13} | {'× smallest':>10}"
    lines = [header, "-" * len(header)]
    smallest = {}
    for row in figures["startup"]:
        base, launch = smallest.setdefault(row["index"], (row["startup_s"], row["process_s"]))
        lines.append(
            f"{row['clips']:>8} | {row['index']:>8} | {row['startup_s']:>10.3f} | {row['startup_s'] / base:>10.2f} | "
            f"{row['process_s']:>13.2f} | {row['process_s'] / launch:>10.2f}"
        )
    lines += ["", f"{'clips':>8} | {'workers':>7} | {'batches/s':>9} | {'× 0 workers':>11}", "-" * 46]
    reference = figures["steady"][0]["batches_per_s"]
    for row in figures["steady"]:
        lines.append(
            f"{row['clips']:>8} | {row['workers']:>7} | {row['batches_per_s']:>9.1f} | "
            f"{row['batches_per_s'] / reference:>11.2f}"
        )
    lines += ["", f"{'clips':>8} | {'online':>7} | {'start-up s':>10} | {'ms a clip':>9}", "-" * 44]
    for row in figures["online"]:
        lines.append(
            f"{row['clips']:>8} | {row['source']:>7} | {row['startup_s']:>10.3f} | "
            f"{1000 * row['startup_s'] / row['clips']:>9.4f}"
        )
    return "\n".join(lines)
