"""Launched runs of `sara stage2 train`: under ``torchrun``, the same losses as one process, a
SIGKILLed run resumed exactly; under scripts/slurm.sbatch, SIGUSR1 → checkpoint → exit 75 →
requeue → resumed on another world size; a busy run folder."""

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
import torch.distributed.checkpoint as dcp
from references import trainable_weights

from sara.cli import main
from sara.parallel.spawn import free_port
from sara.shapes.render import SynthSpec, synthesize
from sara.trainer.checkpoint import latest_checkpoint
from sara.trainer.preemption import EXIT_STOPPED

pytestmark = pytest.mark.slow
LAUNCH_TIMEOUT = 240  # seconds a torchrun run may take
HALF = {"optim.batch_size": 2}  # clips per rank: two data-parallel ranks take the one process's four


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


LAUNCHED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_launch_outlives_its_test():
    """Every launcher a test starts is ended with its processes, however the test ends."""
    yield
    while LAUNCHED:
        proc = LAUNCHED.pop()
        if proc.poll() is None:
            for pid in descendants(proc):
                os.kill(pid, signal.SIGKILL)  # torchrun puts its workers in sessions of their own
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def launch(command: list[str], env: dict) -> subprocess.Popen:
    """``command`` in a session of its own (killed as a group), its output captured."""
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    LAUNCHED.append(proc)
    return proc


def torchrun(processes: int, args: list[str]) -> subprocess.Popen:
    """`sara stage2 train` under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "sara", "stage2", "train", *args]
    return launch(command, os.environ | {"OMP_NUM_THREADS": "1"})


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


def descendants(proc: subprocess.Popen) -> list[int]:
    """Every process under a launcher, parents before children."""
    found, queue = [], [proc.pid]
    while queue:
        pid = queue.pop(0)
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except FileNotFoundError:  # ended meanwhile
            continue
        found += children
        queue += children
    return found


def trainers(proc: subprocess.Popen) -> list[int]:
    """The `python -m sara` processes under a launcher, in start order."""
    return [pid for pid in descendants(proc) if b"sara" in _cmdline(pid)[:4]]  # python [-u] -m sara


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return []


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
    proc = torchrun(2, overrides(shared, killed, steps, **HALF))  # two data-parallel ranks of two clips
    wait_for_checkpoint(killed, proc)
    for pid in trainers(proc):  # torchrun puts its workers in sessions of their own
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = int(latest_checkpoint(killed).name.removeprefix("step-"))
    assert interrupted < steps  # killed mid-run
    finish(torchrun(2, [*overrides(shared, killed, steps, **HALF), "--resume", "latest"]))
    assert losses(killed) == pytest.approx(reference, rel=1e-5)


def test_online_encoding_once_per_ulysses_group_gives_the_losses_of_one_process(shared, tmp_path):
    """Online, the second rank of a Ulysses pair builds no encoders: the first encodes the
    pair's clips and sends them."""
    online = {"online": True, "precompute.cache_dir": tmp_path / "unused"}
    assert main(["stage2", "train", *overrides(shared, tmp_path / "one", 3, **online)]) == 0
    finish(torchrun(2, overrides(shared, tmp_path / "two", 3, **online, **{"parallel.ulysses": 2})))
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


def test_accumulation_on_sharded_ranks_gives_the_whole_batch_of_one_process(shared, tmp_path):
    """Two data-parallel (FSDP) ranks, each running two micro-batches of one clip: every
    micro-batch's backward reduce-scatters into the same sharded gradient, so the steps are
    those of one process on all four clips at once (the same global batch: 1 × 2 × 2 = 4)."""
    more = {"data.caption_dropout": 0.5}  # dropout drawn for the whole batch, then split
    assert main(["stage2", "train", *overrides(shared, tmp_path / "one", 6, **more)]) == 0
    micro = {"optim.batch_size": 1, "optim.accumulate": 2}
    out = finish(torchrun(2, overrides(shared, tmp_path / "two", 6, **more, **micro)))
    assert "global batch 4 = 1 clip(s) × accumulate 2 × dp 2" in out
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
    weights = [trainable_weights(latest_checkpoint(tmp_path / run)) for run in ("one", "two")]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-6)


# SLURM's srun, as far as scripts/slurm.sbatch uses it: its options, then the command started
# once per task with the task's SLURM_* variables; the exit code is the largest of the tasks'
FAKE_SRUN = """#!PYTHON
import os, subprocess, sys
args = sys.argv[1:]
while args[0].startswith("--"):
    args.pop(0)
tasks = int(os.environ["SLURM_NTASKS"])
procs = [
    subprocess.Popen(args, env=os.environ | {"SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)}) for i in range(tasks)
]
sys.exit(max(p.wait() for p in procs))
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$@" >> "$SCONTROL_LOG"
[ "$1" = show ] && echo 127.0.0.1  # the first node of the job: this machine
exit 0
"""


def slurm(tmp_path: Path, args: list[str], tasks: int = 2) -> subprocess.Popen:
    """scripts/slurm.sbatch as SLURM would run it, with `srun` and `scontrol` stand-ins on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(FAKE_SRUN.replace("PYTHON", sys.executable))
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = os.environ | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node-0",
        "SLURM_NTASKS": str(tasks), "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "SARA_PYTHON": sys.executable,
        "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    script = Path(__file__).parents[1] / "scripts" / "slurm.sbatch"
    config = script.parents[1] / "configs" / "stage2" / "tiny.yaml"  # its aligner replaced: saliency from masks
    return launch(["bash", str(script), str(config), *args, "models.aligner=null"], env)


def test_sigusr1_under_slurm_checkpoints_requeues_and_resumes_on_another_world_size(shared, tmp_path):
    """SLURM's USR1 (here to one trainer of two): both finish the step and checkpoint; rank 0
    exits 75 (the other 0) and its task requeues the job, which a job that exits 0 would not
    be; the checkpoint written by two ranks resumes in one process to the reference losses."""
    assert main(["stage2", "train", *overrides(shared, tmp_path / "one", 12)]) == 0
    reference = losses(tmp_path / "one")
    run = tmp_path / "preempted"
    proc = slurm(tmp_path, overrides(shared, run, 400, async_save=True, **HALF))  # shards written in the background
    wait_for_checkpoint(run, proc)
    os.kill(trainers(proc)[1], signal.SIGUSR1)  # one rank is told; all of them stop together
    out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == EXIT_STOPPED, out.decode()[-3000:]
    assert "stopped by a signal after step" in out.decode()
    assert (tmp_path / "scontrol.log").read_text().splitlines() == ["show hostnames node-0", "requeue 4242"]
    stopped = int(latest_checkpoint(run).name.removeprefix("step-"))
    assert 2 <= stopped <= 10 and not (run / "pipeline").exists()
    assert losses(run) == pytest.approx(reference[:stopped], rel=1e-5)
    # written by 2 ranks, resumed by 1: training goes on where it stopped
    assert main(["stage2", "train", *overrides(shared, run, stopped + 2), "--resume", "latest"]) == 0
    assert losses(run) == pytest.approx(reference[: stopped + 2], rel=1e-5)


def test_a_slurm_job_that_finishes_or_fails_is_not_requeued(shared, tmp_path):
    finished = slurm(tmp_path, overrides(shared, tmp_path / "done", 2, **HALF))
    assert finished.wait(timeout=LAUNCH_TIMEOUT) == 0 and (tmp_path / "done" / "pipeline").is_dir()
    failed = slurm(tmp_path, overrides(shared, tmp_path / "bad", 2, **{"parallel.ulysses": 3}))
    out, _ = failed.communicate(timeout=LAUNCH_TIMEOUT)
    assert failed.returncode == 2 and "parallel.ulysses: 3 does not divide" in out.decode()
    assert "requeue" not in (tmp_path / "scontrol.log").read_text()


@pytest.fixture(scope="module")
def a14b(shared) -> dict:
    """The shared world, cached for the two-expert preset."""
    more = {"models.wan": "tiny-a14b", "precompute.cache_dir": shared / "cache-a14b"}
    assert main(["stage2", "precompute", *overrides(shared, shared / "precompute-a14b", **more)]) == 0
    return more


def experts_with_optimizer_state(checkpoint: Path) -> set[str]:
    keys = dcp.FileSystemReader(checkpoint / "state").read_metadata().state_dict_metadata
    return {key.split(".")[3] for key in keys if key.startswith("optim.state.experts.")}


def test_a_checkpoint_taken_before_both_experts_stepped_resumes_exactly(shared, a14b, tmp_path):
    """Seed 0 draws the low-noise expert at step 1 and the high-noise one at step 2: the step-1
    checkpoint holds AdamW state for one expert only. Resumed to step 4 — in one process, and
    on two ranks in bf16 with an EMA (weights gathered in bf16, norms and tables whole on every
    rank, both in the checkpoint) — the losses and weights are the uninterrupted run's: the
    other expert starts fresh (AdamW step counts exact), as it did in the run that wrote it."""
    assert main(["stage2", "train", *overrides(shared, tmp_path / "whole", 4, **a14b)]) == 0
    reference = losses(tmp_path / "whole")
    assert experts_with_optimizer_state(latest_checkpoint(tmp_path / "whole")) == {"high", "low"}
    drill = tmp_path / "one"
    assert main(["stage2", "train", *overrides(shared, drill, 1, save_every=1, **a14b)]) == 0
    assert experts_with_optimizer_state(latest_checkpoint(drill)) == {"low"}
    assert main(["stage2", "train", *overrides(shared, drill, 4, **a14b), "--resume", "latest"]) == 0
    assert losses(drill) == pytest.approx(reference, rel=1e-5)
    bf16 = {**a14b, **HALF, "parallel.param_dtype": "bfloat16", "optim.ema_decay": 0.9}
    finish(torchrun(2, overrides(shared, tmp_path / "whole-bf16", 4, **bf16)))
    ranks = tmp_path / "two"
    finish(torchrun(2, overrides(shared, ranks, 1, save_every=1, **bf16)))
    finish(torchrun(2, [*overrides(shared, ranks, 4, **bf16), "--resume", "latest"]))
    assert losses(ranks) == pytest.approx(losses(tmp_path / "whole-bf16"), rel=1e-6)
    assert losses(ranks) == pytest.approx(reference, rel=1e-2)  # bf16: near the fp32 run, not equal
    weights = [trainable_weights(latest_checkpoint(run)) for run in (tmp_path / "whole-bf16", ranks)]
    for key, value in weights[0].items():  # every weight, the norms and tables kept whole among them
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=0)


def test_a_busy_run_folder_is_refused(shared, tmp_path, capsys):
    run = tmp_path / "busy"
    run.mkdir()
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another trainer holds the run
        assert main(["stage2", "train", *overrides(shared, run, 2)]) == 2
    assert f"{run}: in use by another trainer" in capsys.readouterr().err


def test_stage1_under_torchrun_gives_the_losses_of_one_process(tmp_path, shapes_world):
    shapes = shapes_world(num=16, seed=3, frames=8, size=64, heldout_fraction=0.25)
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
