"""Sharded and sequence-parallel Stage 2 steps against one process: loss and every gradient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import spawn
from parity import compare, counted_step, one_step, sharded_step
from PIL import Image, ImageSequence

from sara.config import load_config
from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.models.presets import resolve
from sara.stage2.cache import FeatureCache, precompute
from sara.stage2.generate import generate


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: resolve("tiny", name, root) for name in ("wan", "wan-ti2v")}


CASES = {
    "fsdp": (2, {}),
    "ulysses": (2, {"ulysses": 2}),
    "fsdp x ulysses": (4, {"ulysses": 2}),
    "hsdp x ulysses": (4, {"dp_replicate": 2, "dp_shard": 1, "ulysses": 2}),
}
LATENT = (3, 8, 8)  # 9 frames of 64² under the 8× VAE (TI2V's 16×: 128²)


def check(folder, mode, size, parallel, *more, latent=LATENT) -> dict:
    """The sharded step against one process, in fp32: loss terms to 1e-5, every gradient to 1e-4."""
    (reference,) = spawn(one_step, 1, folder, mode, latent, "float32", *more)
    found = compare(reference, spawn(sharded_step, size, folder, mode, parallel, latent, "float32", *more))
    assert max(found["terms"].values()) < 1e-5, found["terms"]
    assert found["grad"] < 1e-4, (found["worst"], found["grad"])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_parallel_step_equals_one_process(folders, case):
    size, parallel = CASES[case]
    check(folders["wan"], "sara", size, parallel)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["trd", "repa", "sft", "moalign"])
def test_every_mode_under_fsdp_and_ulysses(folders, mode):
    check(folders["wan"], mode, 4, {"ulysses": 2})


@pytest.mark.slow
@pytest.mark.parametrize("size, parallel", [(2, {}), (4, {"dp_replicate": 2})], ids=["fsdp", "hsdp"])
def test_accumulation_reduces_once_per_step_per_fsdp_unit(folders, size, parallel):
    """Four micro-batches a step: under ``final`` each FSDP unit reduce-scatters (and HSDP
    all-reduces) once a step, under ``every`` it reduce-scatters four times and all-reduces
    once; both give the same gradient."""
    steps = {sync: spawn(counted_step, size, folders["wan"], parallel, LATENT, 4, sync) for sync in ("final", "every")}
    hsdp = parallel.get("dp_replicate", 1) > 1
    for sync, scatters in (("final", 1), ("every", 4)):
        for rank in steps[sync]:
            units = rank["units"]
            assert units >= 3  # blocks, the DiT's own parameters, the projector
            assert rank["counts"] == {"reduce_scatter_single": scatters * units, "all_reduce": units if hsdp else 0}
    final, every = steps["final"][0]["grads"], steps["every"][0]["grads"]
    assert final.keys() == every.keys()
    for name, grad in final.items():
        torch.testing.assert_close(grad, every[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_per_token_timesteps_and_gradient_checkpointing(folders):
    # TI2V-5B: one timestep per DiT token, split with the tokens; blocks recomputed in backward
    check(folders["wan-ti2v"], "sara", 4, {"ulysses": 2}, True, latent=(3, 4, 4))


@pytest.mark.slow
def test_lora_adapters_shard_with_their_frozen_base(folders):
    # the frozen base is sharded too; only the adapters and projectors get gradients
    found = check(folders["wan"], "sara", 4, {"ulysses": 2}, False, True)
    assert all("lora_" in n or n.startswith("projectors.") for n in found["errors"])


PROMPTS = ["a red circle moves left", "a blue square", "a green star moves up"]


def sample(folder, out, ulysses, batch=1):
    sampling = Sampling(steps=2, frames=9, height=64, width=96, batch=batch)
    return [str(p) for p in generate(folder, PROMPTS, out, sampling, "cpu", False, ulysses)]


@pytest.mark.slow
@pytest.mark.parametrize(("ulysses", "batch"), [(1, 1), (2, 1), (2, 2)])
def test_distributed_generation_gives_the_videos_of_one_process(folders, tmp_path, ulysses, batch):
    (single,) = spawn(sample, 1, folders["wan"], tmp_path / "one", 1)  # one thread, as each rank
    # batch 2: the three prompts go to the sequence-parallel group as a pair and one alone
    written = [p for paths in spawn(sample, 2, folders["wan"], tmp_path / "two", ulysses, batch) for p in paths]
    assert sorted(Path(p).name for p in written) == sorted(Path(p).name for p in single)  # each video once
    for path in single:
        # the GIFs (lossless up to their palette; H.264 encodes identical frames differently
        # in concurrent processes): bit for bit when ranks split the prompts, within rounding
        # when they split each video's tokens
        alone, shared = (
            gif_frames(Path(folder) / Path(path).with_suffix(".gif").name)
            for folder in (tmp_path / "one", tmp_path / "two")
        )
        assert alone.shape == (9, 64, 96, 3)
        assert np.abs(alone - shared).max() <= (0 if (ulysses, batch) == (1, 1) else 2)


def gif_frames(path):
    with Image.open(path) as gif:
        return np.stack([np.asarray(frame.convert("RGB"), dtype=np.int16) for frame in ImageSequence.Iterator(gif)])


def precompute_on(world_dir, cache):
    overrides = [
        f"data.train={world_dir / 'train.jsonl'}",
        "data.frames=9",
        "data.size=64",
        "models.text_length=32",
        f"models.tiny_root={cache.parent / ('models-' + cache.name)}",
        f"precompute.cache_dir={cache}",
        "precompute.batch_size=1",
        "precompute.shard_size=2",
        "objective.align.saliency=masks",
        f"out_dir={cache.parent / 'run'}",
    ]  # fmt: skip  (each cache its own tiny presets: the ranks of "two" write theirs at once)
    return str(precompute(load_config(Stage2Config, None, overrides), progress=False))


@pytest.mark.slow
def test_sharded_precompute_equals_one_process(tmp_path, shapes_world):
    shapes = shapes_world(num=6, seed=5, frames=9, size=64, heldout_fraction=0.0)
    (one,) = spawn(precompute_on, 1, shapes, tmp_path / "one")
    spawn(precompute_on, 2, shapes, tmp_path / "two")
    caches = [FeatureCache(tmp_path / name) for name in ("one", "two")]
    assert caches[0].records == caches[1].records == list(range(6))
    writers = {name.split("-")[1] for name in map(caches[1].index.shard, caches[1].records)}
    assert writers == {"000", "001"} and not list((tmp_path / "two").glob("index.rank-*"))  # both wrote; merged
    for position in range(6):
        alone, shared = caches[0][position], caches[1][position]
        assert alone.keys() == shared.keys()
        for key in alone:
            if key != "index":
                torch.testing.assert_close(shared[key], alone[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_experts_shard_and_train_one_per_step(tmp_path):
    # A14B: every rank draws the same expert for the step, so the sharded experts never deadlock
    a14b = resolve("tiny", "wan-a14b", tmp_path)
    found = check(a14b, "sara", 2, {})
    trained = {name.split(".")[1] for name in found["errors"] if name.startswith("experts.")}
    assert len(trained) == 1  # one expert took the whole step
