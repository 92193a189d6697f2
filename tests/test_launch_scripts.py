"""The torchrun launch scripts plan the run first and give torchrun a shutdown timeout that fits
the checkpoint each rank writes (scripts/slurm.sbatch runs real trainers in
tests/test_distributed_training.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sara.config import load_config
from sara.config.stage2 import Stage2Config
from sara.stage2.plan import plan_run

ROOT = Path(__file__).parents[1]
A14B = ROOT / "configs" / "stage2" / "wan2.2-t2v-a14b.yaml"
FAKE_TORCHRUN = """#!/usr/bin/env bash
echo "$@" > "$TORCHRUN_ARGS"
"""


def run_script(tmp_path: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``scripts/SCRIPT`` with a torchrun on PATH that records its arguments instead of launching."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "torchrun").write_text(FAKE_TORCHRUN)
    (bin_dir / "torchrun").chmod(0o755)
    variables = {k: v for k, v in os.environ.items() if k not in ("WAN22_T2V_A14B", "VJEPA2")}
    variables |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SARA_PYTHON": sys.executable, "SARA_ALIGNER": "runs/s1"}
    variables |= {"TORCHRUN_ARGS": str(tmp_path / "torchrun.args"), **env}
    command = ["bash", str(ROOT / "scripts" / script), str(A14B), *args]
    return subprocess.run(command, env=variables, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "script, env, world",
    [("single_node.sh", {"GPUS": "8"}, 8), ("multi_node.sh", {"NNODES": "2", "MASTER_ADDR": "10.0.0.1"}, 16)],
)
def test_torchrun_waits_for_the_checkpoint_the_plan_sizes(tmp_path, script, env, world):
    done = run_script(tmp_path, script, "parallel.ulysses=4", "optim.lora_rank=0", **env)
    assert done.returncode == 0, done.stderr[-2000:]
    config = load_config(Stage2Config, A14B, ["parallel.ulysses=4", "optim.lora_rank=0", "models.aligner=runs/s1"])
    plan = plan_run(config, world)
    timeout = plan.shutdown_timeout  # both experts fully trained, with AdamW: tens of GiB a rank on 8 GPUs
    assert plan.checkpoint_gib > 40 * 8 / world and timeout >= 180 + plan.checkpoint_gib / 0.5 > 30  # torchrun's 30 s
    args = (tmp_path / "torchrun.args").read_text().split()
    assert args[args.index("--shutdown-timeout") + 1] == str(timeout)
    assert args[args.index("--nproc_per_node") + 1] == "8"
    assert args[-6:] == ["--config", str(A14B), "--resume", "latest", "parallel.ulysses=4", "optim.lora_rank=0"]


@pytest.mark.slow
def test_a_run_that_cannot_start_stops_before_torchrun(tmp_path):
    done = run_script(tmp_path, "single_node.sh", "parallel.ulysses=3", GPUS="8")
    assert done.returncode == 2 and not (tmp_path / "torchrun.args").exists()
    assert "sara: error: 8 processes: parallel: dp_replicate 1 × ulysses 3 does not divide the world" in done.stderr
    chosen = run_script(tmp_path, "single_node.sh", GPUS="8", SHUTDOWN_TIMEOUT="900")
    args = (tmp_path / "torchrun.args").read_text().split()
    assert chosen.returncode == 0 and args[args.index("--shutdown-timeout") + 1] == "900"
