"""``torchrun`` runs of `sara stage2 train`: the same losses as one process, a SIGKILLed run
resumed exactly, SIGUSR1 → checkpoint → exit 0 → resumed on another world size, a busy
run folder, shapes that do not split."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sara.cli import main
from sara.config.stage2 import Stage2Config
from sara.data.synthetic import SynthSpec, synthesize
from sara.parallel.context import apply_ulysses
from sara.parallel.world import World
from sara.stage2.build import build_model, resolve_setup
from sara.stage2.train import check_shapes
from sara.trainer.checkpoint import latest_checkpoint, trainable_weights

pytestmark = pytest.mark.slow
LAUNCH_TIMEOUT = 240  # seconds a torchrun run may take


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    synthesize(
        SynthSpec(num=8, seed=5, frames=9, size=64, heldout_fraction=0.0), root / "world", workers=1, progress=False
    )
    assert main(["stage2", "precompute", *overrides(root, root / "precompute")]) == 0
    return root


def overrides(root: Path, out: Path, steps: int = 8, **more) -> list[str]:
    base = {
        "out_dir": out,
        "data.train": root / "world" / "train.jsonl",
        "data.frames": 9,
        "data.size": 64,
        "models.tiny_root": root / "models",
        "models.text_length": 32,
        "precompute.cache_dir": root / "cache",
        "objective.align.saliency": "masks",
        "optim.steps": steps,
        "optim.batch_size": 4,
        "optim.warmup_steps": 1,
        "log_every": 1,
        "save_every": 2,
        **more,
    }
    return [f"{k}={v}" for k, v in base.items()]


def torchrun(processes: int, args: list[str]) -> subprocess.Popen:
    """`sara stage2 train` under torchrun, in a session of its own (killed as a group)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "sara", "stage2", "train", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, out.decode()[-3000:]
    return out.decode()


def wait_for_checkpoint(run: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while latest_checkpoint(run) is None:
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def workers(proc: subprocess.Popen) -> list[int]:
    """The training processes torchrun started (children of its agent)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def losses(run: Path) -> list[float]:
    return [row["loss"] for row in json.loads((run / "history.json").read_text())]


def test_torchrun_gives_the_losses_of_one_process_and_resumes_exactly_after_sigkill(shared, tmp_path):
    steps = 48  # long enough that the kill lands mid-run
    assert main(["stage2", "train", *overrides(shared, tmp_path / "one", steps)]) == 0
    reference = losses(tmp_path / "one")
    finish(torchrun(2, overrides(shared, tmp_path / "two", steps, **{"parallel.ulysses": 2})))
    assert losses(tmp_path / "two") == pytest.approx(reference, rel=1e-5)
    weights = [trainable_weights(latest_checkpoint(tmp_path / run)) for run in ("one", "two")]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-3, atol=1e-5)  # 48 AdamW steps of float drift

    killed = tmp_path / "killed"
    proc = torchrun(2, overrides(shared, killed, steps))
    wait_for_checkpoint(killed, proc)
    for pid in workers(proc):  # torchrun puts its workers in sessions of their own
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = int(latest_checkpoint(killed).name.removeprefix("step-"))
    assert interrupted < steps  # killed mid-run
    finish(torchrun(2, [*overrides(shared, killed, steps), "--resume", "latest"]))
    assert losses(killed) == pytest.approx(reference, rel=1e-5)


def test_accumulation_on_sharded_ranks_gives_the_whole_batch_of_one_process(shared, tmp_path):
    """Two data-parallel (FSDP) ranks, each running its two clips as two micro-batches: every
    micro-batch's backward reduce-scatters into the same sharded gradient, so the steps are
    those of one process on all four clips at once."""
    more = {"data.caption_dropout": 0.5}  # dropout drawn for the whole batch, then split
    assert main(["stage2", "train", *overrides(shared, tmp_path / "one", 6, **more)]) == 0
    finish(torchrun(2, overrides(shared, tmp_path / "two", 6, **more, **{"optim.accumulate": 2})))
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    weights = [trainable_weights(latest_checkpoint(tmp_path / run)) for run in ("one", "two")]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-6)


def test_sigusr1_checkpoints_exits_zero_and_resumes_on_another_world_size(shared, tmp_path):
    assert main(["stage2", "train", *overrides(shared, tmp_path / "one", 12)]) == 0
    reference = losses(tmp_path / "one")
    run = tmp_path / "preempted"
    proc = torchrun(2, overrides(shared, run, 400, async_save=True))  # shards written in the background
    wait_for_checkpoint(run, proc)
    os.kill(workers(proc)[1], signal.SIGUSR1)  # one rank is told; all of them stop together
    out = finish(proc)
    assert "stopped by a signal after step" in out
    stopped = int(latest_checkpoint(run).name.removeprefix("step-"))
    assert 2 <= stopped <= 10 and not (run / "pipeline").exists()
    assert losses(run) == pytest.approx(reference[:stopped], rel=1e-5)
    # written by 2 ranks, resumed by 1: training goes on where it stopped
    assert main(["stage2", "train", *overrides(shared, run, stopped + 2), "--resume", "latest"]) == 0
    assert losses(run) == pytest.approx(reference[: stopped + 2], rel=1e-5)


def test_a_busy_run_folder_is_refused(shared, tmp_path, capsys):
    run = tmp_path / "busy"
    run.mkdir()
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another trainer holds the run
        assert main(["stage2", "train", *overrides(shared, run, 2)]) == 2
    assert f"{run}: in use by another trainer" in capsys.readouterr().err


def test_shapes_that_do_not_split_are_refused(tmp_path):
    config = Stage2Config()
    config.models.tiny_root, config.objective.align.mode = str(tmp_path), "sft"
    config.data.frames, config.data.size = 17, 32  # latents 5 × 4 × 4 → 20 DiT tokens
    setup = resolve_setup(config)
    model = build_model(config, setup)
    three = World(rank=0, size=3, device=torch.device("cpu"), cp=3)
    with pytest.raises(ValueError, match=r"data.buckets: 17 frames of 32×32: 20 DiT tokens do not split over"):
        check_shapes(model, setup, three)
    check_shapes(model, setup, World(rank=0, size=4, device=torch.device("cpu"), cp=4))  # 20 = 4 × 5
    with pytest.raises(ValueError, match="parallel.ulysses: 3 does not divide the DiT's 4 attention heads"):
        apply_ulysses(model.experts["high"], three)


def test_stage1_under_torchrun_gives_the_losses_of_one_process(tmp_path):
    shapes = tmp_path / "shapes"
    synthesize(SynthSpec(num=16, seed=3, frames=8, size=64, heldout_fraction=0.25), shapes, workers=1, progress=False)
    settings = {
        "data.train": shapes / "train.jsonl", "data.heldout": shapes / "heldout.jsonl", "data.frames": 8,
        "data.size": 64, "optim.steps": 6, "optim.batch_size": 8, "optim.warmup_steps": 1, "log_every": 1,
        "eval_every": 3, "save_every": 3,
    }  # fmt: skip

    def args(out: Path, models: str) -> list[str]:
        values = settings | {
            "out_dir": out,
            "models.tiny_root": tmp_path / models,
            "cache_dir": tmp_path / models / "c",
        }
        return [f"{k}={v}" for k, v in values.items()]

    assert main(["stage1", "train", *args(tmp_path / "one", "models-one")]) == 0
    # two ranks on fresh tiny presets: each writes them, each encodes half the clips
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        [*command, "-m", "sara", "stage1", "train", *args(tmp_path / "two", "models-two")],
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    finish(proc)
    curves = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("one", "two")]
    for key in ("loss", "bce", "dice", "infonce"):
        assert [r[key] for r in curves[1]] == pytest.approx([r[key] for r in curves[0]], rel=1e-5), key
    figures = [json.loads((tmp_path / run / "eval.json").read_text()) for run in ("one", "two")]
    assert figures[1] == pytest.approx(figures[0], rel=1e-4, abs=1e-6)


LINGER = """
import time

import torch
import torch.distributed as dist

from sara.config.parallel import ParallelConfig
from sara.parallel.world import close_world, init_world

world = init_world(ParallelConfig(), "cpu")
dist.all_reduce(torch.ones(8))
if world.rank == 0:
    time.sleep(0.5)  # still at work (writing the export) when rank 1 leaves
close_world(world)
"""


def test_a_rank_that_leaves_first_exits_cleanly(tmp_path):
    # with the meshes' groups left to the interpreter's shutdown, about half of these aborted
    script = tmp_path / "linger.py"
    script.write_text(LINGER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    for _ in range(6):
        done = subprocess.run(
            command, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT
        )
        assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]
