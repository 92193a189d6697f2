"""`sara repro` end to end at a smoke size: every (teacher, seed, arm) trained, sampled with
paired noise and scored, in worker processes and in one, to the same scores; the table,
results and report written; a second call trains nothing."""

import json
import shutil

import numpy as np
import pytest
import torch

from sara.cli import main
from sara.study.run import worker_threads

pytestmark = pytest.mark.slow


@pytest.fixture
def worker_share():
    """This process at a worker's thread count, which sets the order of each sum: the caches
    written here and the runs in workers then round alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads(2))
    yield
    torch.set_num_threads(threads)


def test_repro_runs_every_arm_and_seed_and_resumes(tmp_path, capsys, worker_share):
    out = tmp_path / "repro"
    args = [f"out_dir={out}", "arms=[sft,sara]", "seeds=[0,1]", "prompts=2", "generate_steps=2"]
    args += ["world.num=6", "world.frames=9", "world.size=64", "world.heldout_fraction=0.0"]
    args += ["stage2.data.frames=9", "stage2.data.size=64", "stage2.models.text_length=16"]
    args += ["stage2.models.wan=tiny"]  # the shapes VAE trains for minutes: tests/test_shapes_vae.py
    args += ["stage2.optim.steps=2", "stage2.optim.batch_size=2", "stage2.optim.warmup_steps=1"]
    args += ["stage2.log_every=1", "stage2.save_every=2"]
    # in two worker processes
    assert main(["repro", "study", "--config", "configs/repro.yaml", *args, "jobs=2"]) == 0
    runs = {(seed, arm): out / "runs" / "vjepa2" / f"seed{seed}" / arm for seed in (0, 1) for arm in ("sft", "sara")}
    for run in runs.values():
        assert (run / "pipeline" / "model_index.json").is_file()
        assert len(list((run / "videos").glob("*.mp4"))) == 2
        assert len((run / "scores.jsonl").read_text().splitlines()) == 2
    losses = {key: json.loads((run / "history.json").read_text()) for key, run in runs.items()}
    # same initialisation, batch and noise in every arm of a seed: step 1's flow term agrees
    assert losses[(0, "sft")][0]["flow"] == losses[(0, "sara")][0]["flow"] != losses[(1, "sft")][0]["flow"]
    assert all(r["align"] == 0 for r in losses[(0, "sft")]) and all(r["align"] > 0 for r in losses[(0, "sara")])

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"vjepa2", "oracle"}
    oracle = json.loads((out / "runs" / "oracle" / "seed0" / "sara" / "history.json").read_text())
    assert oracle[0]["flow"] == losses[(0, "sara")][0]["flow"] and oracle[0]["align"] != losses[(0, "sara")][0]["align"]
    tables = results["vjepa2"]
    assert set(tables["arms"]) == {"sft", "sara"} and set(tables["paired"]) == {"sara − sft"}
    assert len(tables["arms"]["sara"]["all"]["seeds"]) == 2 and tables["arms"]["sara"]["all"]["n"] == 4
    table = (out / "table.md").read_text()
    assert "| sara − sft |" in table and "seed 1" in table and "wall time" in table
    assert (out / "report.html").stat().st_size > 0 and "table:" in capsys.readouterr().out

    # the same study in this process: each run's figures do not depend on the process that ran it.
    # It reads the first study's world: H.264 encodes identical frames differently from one
    # process to another, so a world written again is not the same bytes
    alone = tmp_path / "alone"
    for inputs in ("world", "prompts"):
        shutil.copytree(out / inputs, alone / inputs)
    assert main(["repro", "study", "--config", "configs/repro.yaml", *args, f"out_dir={alone}", "jobs=1"]) == 0
    assert json.loads((alone / "results.json").read_text()) == results
    terms = ("step", "loss", "flow", "align", "grad_norm")  # not the time or memory of the process
    for key, run in runs.items():
        history = json.loads((alone / run.relative_to(out) / "history.json").read_text())
        assert [[row[t] for t in terms] for row in history] == [[row[t] for t in terms] for row in losses[key]]

    trained = {key: (run / "pipeline" / "model_index.json").stat().st_mtime_ns for key, run in runs.items()}
    assert main(["repro", "study", "--config", "configs/repro.yaml", *args]) == 0
    assert trained == {key: (run / "pipeline" / "model_index.json").stat().st_mtime_ns for key, run in runs.items()}


def test_each_paired_difference_appears_once():
    """Against sft and trd, without the mirror `sft − trd` of `trd − sft`."""
    from sara.shapes.metric import METRICS
    from sara.study.tables import study_tables

    rng = np.random.default_rng(0)
    results = {("t", s, a): [dict.fromkeys(METRICS, rng.random()) for _ in range(4)] for s in (0, 1) for a in ARMS}
    paired = study_tables(results, ["t"], [0, 1], list(ARMS))["t"]["paired"]
    assert list(paired) == ["trd − sft", "sara − sft", "sara − trd"]


ARMS = ("sft", "trd", "sara")
