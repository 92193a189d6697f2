"""The torch the package declares is the torch the tests run on, and it has what the code calls."""

import inspect
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import torch
import torch.distributed._functional_collectives as funcol
from packaging.version import Version
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

ROOT = Path(__file__).parents[1]


def test_the_declared_torch_floor_is_the_release_the_suite_installs_and_runs():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (floor,) = [re.fullmatch(r"torch>=([\d.]+)", d).group(1) for d in dependencies if d.startswith("torch")]
    installed = re.search(r"^TORCH \?= torch==([\d.]+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert Version(floor) == Version(installed) == Version(Version(torch.__version__).base_version)


def test_the_floor_has_what_the_code_calls():
    assert callable(funcol.all_gather_single_autograd)  # sara.parallel.collectives
    assert "ignored_params" in inspect.signature(fully_shard).parameters  # sara.stage2.parallelize
    assert "cast_forward_inputs" in inspect.signature(MixedPrecisionPolicy).parameters
    assert callable(torch.nn.utils.get_total_norm) and callable(torch.nn.utils.clip_grads_with_norm_)
    usage = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"], capture_output=True, text=True)
    assert "--shutdown-timeout" in usage.stdout  # scripts/single_node.sh, scripts/multi_node.sh
