"""The demo's section on many processes: the Stage 2 run of the demo repeated under
``torchrun`` (gloo on CPU) with FSDP and with Ulysses, its losses beside one process's,
and the memory per GPU of the real models from ``sara stage2 plan``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from sara.config import config_to_yaml
from sara.config.parallel import ParallelConfig
from sara.config.schema import DemoConfig
from sara.parallel.plan import PlanSpec, format_plan
from sara.report import Section, paragraph, preformatted, table
from sara.stage2.cache import cache_dir
from sara.stage2.train import train

STEPS = 6
RUNS = {"1 process": None, "2 × FSDP": ParallelConfig(), "2 × Ulysses": ParallelConfig(dp_shard=1, ulysses=2)}


def _torchrun(config_file: Path, processes: int) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "sara", "stage2", "train", "--config", str(config_file)]
    done = subprocess.run(command, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"torchrun failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def parallel_part(config: DemoConfig, out: Path) -> Section:
    losses = {}
    for name, parallel in RUNS.items():
        run = out / "parallel" / name.replace(" ", "").replace("×", "x")
        stage2 = replace(
            config.stage2,
            out_dir=str(run),
            optim=replace(config.stage2.optim, steps=STEPS),
            save_every=STEPS,
            log_every=1,
            validation=replace(config.stage2.validation, every=0),
            parallel=parallel or ParallelConfig(),
            precompute=replace(config.stage2.precompute, cache_dir=str(cache_dir(config.stage2))),  # the demo's cache
        )
        if parallel is None:
            train(stage2, progress=False)
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "config.yaml"
                path.write_text(config_to_yaml(stage2))
                _torchrun(path, 2)
        losses[name] = [row["loss"] for row in json.loads((run / "history.json").read_text())]
    reference = losses["1 process"]
    rows = [[str(step + 1), *(f"{losses[name][step]:.6f}" for name in RUNS)] for step in range(STEPS)]
    worst = max(abs(a - b) / abs(b) for name in RUNS for a, b in zip(losses[name], reference, strict=True))
    plans = [
        format_plan(PlanSpec("wan2.2-ti2v-5b", ema=True), [8, 16]),
        format_plan(PlanSpec("wan2.2-t2v-a14b", experts=2, ema=True, vfm_dim=1408), [8, 16]),
    ]
    print(f"torchrun losses against one process: largest relative difference {worst:.1e}")
    print("\n".join(plans))
    body = "".join(
        [
            paragraph(
                f"The demo's Stage 2 run ({STEPS} steps of {config.stage2.optim.batch_size} clips, mode "
                f"`{config.stage2.objective.align.mode}`) in one process and under `torchrun` with 2 gloo processes: "
                "FSDP2 over both (each rank takes half of every batch), and Ulysses sequence parallelism (both ranks "
                "take the whole batch and split each clip's tokens; each computes its share of the TRD pairs). "
                f"Largest relative difference of a logged loss from one process: {worst:.1e}."
            ),
            table(["step", *RUNS], rows),
            paragraph(
                "`sara stage2 plan`: memory per GPU of a full fine-tune of the real Wan2.2 models (built on the meta "
                "device, no weights), before activations; `docs/DISTRIBUTED.md` explains the layout."
            ),
            preformatted("\n\n".join(plans)),
        ]
    )
    return Section("Many processes: FSDP2 and Ulysses", body)
