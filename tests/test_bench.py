"""The TRD benchmark's bookkeeping (its timings are printed, never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sara.bench.accumulate import bench_accumulate, format_accumulate
from sara.bench.data import bench_data, format_data
from sara.bench.dist import bench_sharding, bench_shares, format_dist
from sara.bench.encoders import bench_encoders, format_encoders
from sara.bench.trd import Case, _flops, dense_fits, format_rows
from sara.cli import main
from sara.data.facts import read_facts
from sara.data.manifest import load_manifest
from sara.run_dir import RunDir
from sara.stage2.cache_index import from_columns


def case(path="blockwise", tokens=64, mode="none", chunk=16):
    sizes = {"dim": 8, "batch": 2, "fg_fraction": 0.5}
    return Case(path, tokens, **sizes, mode=mode, device="cpu", dtype="float32", chunk=chunk, repeats=1, min_seconds=0)


def test_dense_is_skipped_where_it_cannot_fit():
    assert dense_fits(case("dense", tokens=256))
    assert not dense_fits(case("dense", tokens=2_000_000))  # 8 × 2 × (2e6)² × 4 bytes


def test_flops_count_the_products_each_path_runs():
    n, d, b = 64, 8, 2
    assert _flops(case("dense"), None) == 2 * b * n * n * 4 * d
    # the blockwise path visits the upper triangle of 16-row panels: 64·16 + 48·16 + 32·16 + 16·16 pairs
    assert _flops(case("blockwise"), None) == 2 * b * 16 * (64 + 48 + 32 + 16) * 4 * d
    # a hard OR mask with the first half set skips the background–background triangle
    saliency = torch.zeros(b, n)
    saliency[:, : n // 2] = 1
    assert _flops(case("blockwise", mode="or"), saliency) == 2 * b * 16 * (64 + 48) * 4 * d


def test_table_notes_a_skipped_dense_run():
    measured = {"seconds": 2.0, "peak_gib": 0.5, "gflops": 100.0}
    rows = [
        {
            "tokens": 1024,
            "mode": "or",
            "blockwise": measured,
            "dense": {**measured, "seconds": 4.0},
            "matmul_gflops": 200.0,
        },
        {"tokens": 65536, "mode": "or", "blockwise": measured, "dense": None, "matmul_gflops": 200.0},
    ]
    lines = format_rows(rows).splitlines()
    assert lines[2].split()[:6] == ["1024", "or", "|", "4.000", "2.000", "0.50"]
    assert lines[2].endswith("50%")
    assert lines[3].split()[:6] == ["65536", "or", "|", "—", "2.000", "—"]
    assert lines[-1] == "N=65536 or: dense skipped, its N×N buffers would not fit in free memory"


@pytest.mark.slow
def test_bench_step_prints_each_mode_as_a_ratio_to_sft(tmp_path, capsys):
    args = ["bench", "step", "--json", "--frames", "9", "--size", "64", "--warmup", "0", "--steps", "2"]  # no warm-up
    assert main([*args, "--workdir", str(tmp_path)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results) == ["sft", "trd", "sara", "sara_online"]
    for row in results.values():
        assert set(row) == {"step_s", "peak_mib", "ratio_to_sft", "batch", "data_wait"} and row["step_s"] > 0
        assert 0 < row["data_wait"] < 1  # read in the step (no workers): a part of it
        assert row["ratio_to_sft"] == pytest.approx(row["step_s"] / results["sft"]["step_s"])
        assert row["batch"] == 2  # the default
    assert results["sft"]["ratio_to_sft"] == 1.0
    assert all(row["peak_mib"] >= 0 for row in results.values())  # the first step's peak, without a warm-up
    # the same workdir at a batch larger than its first world steps that batch, not fewer
    assert main([*args, "--modes", "sft", "--no-online", "--batch", "9", "--workdir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["sft"]["batch"] == 9  # the first world holds 8 clips


@pytest.mark.slow
def test_bench_step_memory_switches_each_run_below_the_case_they_change(tmp_path, capsys):
    args = ["bench", "step", "--modes", "sara", "--memory", "--batch", "2", "--frames", "9", "--size", "64"]
    assert main([*args, "--warmup", "1", "--steps", "1", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out.split("memory switches, each against the case above it that it changes:")[1]
    rows = {line.split("|")[0].strip(): line.split("|")[1:] for line in table.splitlines() if "|" in line}
    trained = ["sara+accumulate2", "sara+checkpointing", "sara+lora8", "sara+lora8+fp8"]
    vae = ["sara_online+vae_tile", "sara_online+vae_slicing"]
    validate = ["validate+offload_frozen"]
    assert list(rows) == ["case", "sara", *trained, "sara_online", *vae, "validate", *validate]
    for reference in ("sara", "sara_online", "validate"):
        assert [cell.split()[1] for cell in rows[reference][:2]] == ["1.00", "1.00"]
    # a validation round is no training step: it is kept out of the modes' table
    assert "validate" not in out.split("memory switches")[0]
    # the validation cases sampled the world's first two captions with a two-expert model,
    # the tiny DiT having one expert
    assert "validate: 2 validation videos of tiny-a14b training its low-noise expert" in out
    assert len(list(RunDir(tmp_path / "run").samples(0).glob("*.mp4"))) == 2


@pytest.mark.slow
def test_bench_dist_counts_the_shards_and_the_sequence_traffic(tmp_path):
    worlds = {"1": (1, {}), "2 fsdp": (2, {}), "2 ulysses": (2, {"dp_shard": 1, "ulysses": 2})}
    sharding = bench_sharding(str(tmp_path), worlds=worlds)
    one, fsdp, ulysses = (sharding[k] for k in worlds)
    for part in ("params_mib", "grads_mib", "adamw_mib"):  # exact bytes of the local shards
        assert fsdp[part] == pytest.approx(one[part] / 2, rel=0.02) and ulysses[part] == pytest.approx(fsdp[part])
    assert not one["sent_mib"] and not fsdp["sent_mib"]  # no sequence parallelism, no such traffic
    assert ulysses["sent_mib"]["all_to_all_single"] > 0 and ulysses["sent_mib"]["reduce_scatter_tensor"] > 0
    shares = bench_shares([256], 64, [2], min_seconds=0.0)
    assert [(r["tokens"], r["parts"]) for r in shares] == [(256, 1), (256, 2)]
    table = format_dist(sharding, shares)
    assert "2 ulysses" in table and "   256   2 |" in table


def test_bench_vae_times_each_phase_with_both_layer_sets(capsys):
    assert main(["bench", "vae", "--warmup", "0", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("shapes VAE training step (base width 16, 64² crops)")
    rows = [line.split("|")[1:-1] for line in lines[3:]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [("single frames", "8 × 1"), ("clips", "4 × 5")]
    for row in rows:
        diffusers, fast, ratio = (float(cell.split()[0]) for cell in row[2:])
        assert diffusers > 0 and fast > 0 and ratio == pytest.approx(diffusers / fast, rel=0.05)


@pytest.mark.slow
def test_the_gpu_check_runs_dry_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh --dry-run: every check of `sara bench gpu` at toy sizes, figures in OUT."""
    script = Path(__file__).parents[1] / "scripts" / "gpu_check.sh"
    env = os.environ | {"OUT": str(tmp_path), "SARA_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(script), "--dry-run"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    trd = figures["trd"]
    assert trd["tokens"] == 512 and trd["blockwise"]["dtype"] == "bfloat16" and trd["dense"] is not None
    assert set(figures["step"]) == {"sft", "sara"}
    for row in figures["step"].values():  # 2 × 2 × 4 DiT tokens; V-JEPA: 1 tubelet of 4 × 8
        assert (row["dit_tokens"], row["vfm_tokens"]) == (16, 32)
        assert row["timestep_dtype"] == "float32" and row["timesteps_exact"]
    assert "timesteps float32, equal to σ · 1000" in done.stdout


@pytest.mark.slow
def test_bench_data_times_startup_per_index_and_the_loader_per_worker_count(tmp_path):
    figures = bench_data(tmp_path, [200], [0, 2], steps=5, progress=False)
    assert [(r["clips"], r["index"]) for r in figures["startup"]] == [(200, "index"), (200, "headers")]
    assert all(r["startup_s"] > 0 for r in figures["startup"])
    assert [(r["clips"], r["workers"]) for r in figures["steady"]] == [(200, 0), (200, 2)]
    assert all(r["batches_per_s"] > 0 for r in figures["steady"])
    index = json.loads((tmp_path / "cache-200" / "index.json").read_text())
    assert index["clips"]["records"] == list(range(200))
    assert from_columns(index["clips"])["7"]["shapes"]["latents"] == [4, 2, 4, 5]
    assert sorted(p.name for p in (tmp_path / "cache-200").glob("index*")) == ["index-headers.json", "index.json"]
    assert [(r["clips"], r["source"]) for r in figures["online"]] == [(200, "facts"), (200, "videos")]
    assert all(r["startup_s"] > 0 for r in figures["online"])
    assert len(read_facts(load_manifest(tmp_path / "manifest-200" / "train.jsonl"))) == 1  # one video, 200 records
    table = format_data(figures)
    assert "headers" in table and "videos" in table and table.count("\n") == 13


@pytest.mark.slow
def test_bench_accumulate_counts_one_reduce_scatter_per_unit_under_final(tmp_path):
    figures = bench_accumulate(str(tmp_path), ranks=2, accumulate=2, steps=1, preset="wan")
    one, final, every = figures["accumulation"]
    assert (one["accumulate"], final["accumulate"], every["accumulate"]) == (1, 2, 2)
    assert final["rs"] == one["rs"] > 0 and every["rs"] == 2 * one["rs"]
    assert figures["ema"]["EMAModel"] > 0 and figures["ema"]["LocalEMA"] > 0
    assert "reduce-scatters" in format_accumulate(figures)


@pytest.mark.slow
def test_bench_encoders_holds_one_copy_of_each_frozen_model(tmp_path):
    figures = bench_encoders(tmp_path)
    copies, shared = figures["tiny"]["copies"], figures["tiny"]["shared"]
    assert shared["parameters_mib"] < copies["parameters_mib"]
    real = figures["real"]
    assert 0.2e9 < real["vjepa2_params"] < 0.5e9 and 5e9 < real["umt5_params"] < 6e9  # ViT-L; umT5-XXL's encoder
    assert real["before_gib"] == pytest.approx(4 * real["after_gib"])
    assert "one of each in bf16" in format_encoders(figures)


def test_bench_sample_times_each_batch_size_on_the_same_videos(tmp_path, capsys):
    args = ["--workdir", str(tmp_path), "--videos", "3", "--steps", "2", "--frames", "5", "--size", "32"]
    assert main(["bench", "sample", *args, "--batch", "1", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["batch"], row["videos"]) for row in rows] == [(1, 3), (2, 3)]
    assert rows[0]["speedup"] == 1.0 and all(row["s_per_video"] > 0 and row["speedup"] > 0 for row in rows)
    assert main(["bench", "sample", *args, "--batch", "3"]) == 0  # no row of one by one: no ratio to give
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("text-to-video with the tiny Wan pipeline: 3 videos of 5 frames at 32²")
    assert lines[-1].startswith("| 3 |") and lines[-1].endswith("| – |")
