"""The demo's section on many processes: the Stage 2 run of the demo repeated under
``torchrun`` (gloo on CPU) with FSDP and with Ulysses, its losses beside one process's,
and the memory per GPU of the real models from ``sara stage2 plan``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from sara.config import config_to_yaml, load_config
from sara.config.parallel import ParallelConfig
from sara.config.schema import DemoConfig
from sara.config.stage2 import Stage2Config
from sara.demo.html import Section, paragraph, preformatted, table
from sara.run_dir import RunDir
from sara.stage2.build import cache_dir
from sara.stage2.plan import format_plan, plan_run
from sara.stage2.train import train

log = logging.getLogger(__name__)

STEPS = 6
BF16 = "bfloat16"
# each run: its processes, its split of the world and compute dtype, and the run of one
# process it must equal; a data-parallel rank takes its share of the demo's clips, so that
# every run steps on the same global batch
RUNS = {
    "1 process": (1, ParallelConfig(), "1 process"),
    "2 × FSDP": (2, ParallelConfig(), "1 process"),
    "2 × Ulysses": (2, ParallelConfig(dp_shard=1, ulysses=2), "1 process"),
    "1 process, bf16": (1, ParallelConfig(param_dtype=BF16), "1 process, bf16"),
    "2 × FSDP, bf16": (2, ParallelConfig(param_dtype=BF16), "1 process, bf16"),
}
REAL = Path(__file__).parents[2] / "configs" / "stage2"  # the shipped configs of the released models
PLANNED = ["parallel.ulysses=2", "models.aligner=runs/stage1"]  # their aligner: a Stage 1 run's folder


def _torchrun(config_file: Path, processes: int) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "sara", "stage2", "train", "--config", str(config_file)]
    done = subprocess.run(command, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"torchrun failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def parallel_part(config: DemoConfig, out: Path) -> Section:
    losses = {}
    for name, (processes, parallel, _) in RUNS.items():
        run = out / "parallel" / name.replace(" ", "").replace("×", "x").replace(",", "")
        dp = processes // parallel.ulysses
        stage2 = replace(
            config.stage2,
            out_dir=str(run),
            optim=replace(config.stage2.optim, steps=STEPS, batch_size=config.stage2.optim.batch_size // dp),
            save_every=STEPS,
            log_every=1,
            validation=replace(config.stage2.validation, every=0),
            parallel=parallel,
            precompute=replace(config.stage2.precompute, cache_dir=str(cache_dir(config.stage2))),  # the demo's cache
        )
        if processes == 1:
            train(stage2, progress=False)
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "config.yaml"
                path.write_text(config_to_yaml(stage2))
                _torchrun(path, processes)
        losses[name] = [row["loss"] for row in json.loads(RunDir(run).history.read_text())]
    rows = [[str(step + 1), *(f"{losses[name][step]:.6f}" for name in RUNS)] for step in range(STEPS)]
    worst = {
        dtype: max(
            abs(a - b) / abs(b)
            for name, (_, parallel, reference) in RUNS.items()
            if parallel.param_dtype == dtype
            for a, b in zip(losses[name], losses[reference], strict=True)
        )
        for dtype in ("auto", BF16)
    }
    plans = [
        format_plan(plan_run(load_config(Stage2Config, REAL / name, PLANNED), world), name)
        for name in ("wan2.2-ti2v-5b.yaml", "wan2.2-t2v-a14b.yaml")
        for world in (8, 16)
    ]
    log.info(
        f"torchrun losses against one process: largest relative difference {worst['auto']:.1e} (fp32), "
        f"{worst[BF16]:.1e} (bf16)"
    )
    log.info("\n".join(plans))
    body = "".join(
        [
            paragraph(
                f"The demo's Stage 2 run ({STEPS} steps of a global batch of {config.stage2.optim.batch_size} clips, mode "
                f"`{config.stage2.objective.align.mode}`) in one process and under `torchrun` with 2 gloo processes: "
                "FSDP2 over both (each rank takes half of every batch), and Ulysses sequence parallelism (both ranks "
                "take the whole batch and split each clip's tokens; each computes its share of the TRD pairs). "
                f"Largest relative difference of a logged loss from one process: {worst['auto']:.1e}. The same run "
                "in bf16, as a GPU computes it (`parallel.param_dtype=bfloat16`: autocast with fp32 masters, FSDP "
                "gathering in bf16, the timesteps kept fp32), in one process and on 2 FSDP ranks: largest "
                f"relative difference {worst[BF16]:.1e}."
            ),
            table(["step", *RUNS], rows),
            paragraph(
                "`sara stage2 plan` of the shipped configs of the real Wan2.2 models (TI2V-5B: a full fine-tune with "
                "an EMA; T2V-A14B: LoRA of both experts) with Ulysses 2 on 8 and 16 GPUs: the run resolved from the "
                "released models' configs (built on the meta device, no weights) before any weight is read — splits, "
                "batch, expert routing, token grids, validation sampling, memory per GPU before activations and "
                "the checkpoint each rank writes; `docs/DISTRIBUTED.md` explains the layout."
            ),
            preformatted("\n\n".join(plans)),
        ]
    )
    return Section("Many processes: FSDP2 and Ulysses", body)
