"""`sara repro study` end to end at a smoke size: the base trained, every run started from its
weights bitwise, extended point by point, sampled with paired noise on both prompt sets and
scored; sft shared by the teachers and the same under either; the tables, figure and report
written; a second call trains nothing."""

import json
import re

import numpy as np
import pytest
import torch
from repro_smoke import BASE_SMOKE

from sara.cli import main
from sara.config import load_config
from sara.config.repro import ReproConfig
from sara.run_dir import RunDir
from sara.stage2.cache import precompute
from sara.stage2.train import train
from sara.study.run import (
    arm_config,
    check_start,
    check_worlds,
    run_folder,
    scoring_points,
    set_points,
    transformer_weights,
)
from sara.study.workers import worker_threads

SMOKE = [
    *BASE_SMOKE,
    "base.gate_binding=0", "base.gate_all=0",
    "world.num=10", "world.size=64", "world.heldout_fraction=0.2", "prompts=2", "generate_steps=2",
    "points=[0,1,2]", "seeds=[0,1]", "stage2.optim.batch_size=2", "stage2.log_every=1", "stage2.save_every=1",
    "stage2.objective.align.motion.steps=5", "jobs=2",
]  # fmt: skip
ARMS = ("sft", "trd", "moalign", "sara")


@pytest.fixture
def worker_share():
    """This process at a worker's thread count, which sets the order of each sum: runs trained
    here and in workers then round alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads(2))
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_study_starts_every_run_from_the_base_and_scores_each_point(tmp_path, capsys, worker_share):
    out = tmp_path / "repro"
    args = [*SMOKE, f"out_dir={out}"]
    assert main(["repro", "study", "--config", "configs/repro.yaml", *args]) == 0
    config = load_config(ReproConfig, "configs/repro.yaml", args)
    runs = {(t, s, a): run_folder(config, t, s, a) for t in ("vjepa2", "oracle") for s in (0, 1) for a in ARMS}
    assert runs[("vjepa2", 0, "sft")] == runs[("oracle", 0, "sft")]  # one sft run serves both teachers
    for run in set(runs.values()):
        assert json.loads((run / "start.json").read_text())["tensors"] > 0  # started from the base, bitwise
        for point, names in ((1, {"seen"}), (2, {"seen", "unseen"})):  # the unseen pairs at the last point only
            assert {path.parent.name for path in (run / "points" / f"step-{point}").glob("*/scores.jsonl")} == names
            for name in names:
                assert len((run / "points" / f"step-{point}" / name / "scores.jsonl").read_text().splitlines()) == 2
    histories = {key: json.loads((run / "history.json").read_text()) for key, run in runs.items()}
    # the same batch and noise in every arm of a seed: step 1's flow term agrees
    first = {key: rows[0] for key, rows in histories.items()}
    assert (
        first[("vjepa2", 0, "sft")]["flow"]
        == first[("vjepa2", 0, "sara")]["flow"]
        == first[("oracle", 0, "trd")]["flow"]
    )
    assert first[("vjepa2", 0, "sft")]["flow"] != first[("vjepa2", 1, "sft")]["flow"]
    assert [row["step"] for row in histories[("oracle", 1, "moalign")]] == [1, 2]  # resumed from 1 to 2
    assert all(r["align"] == 0 for r in histories[("vjepa2", 0, "sft")])
    assert all(r["align"] > 0 for key, rows in histories.items() if key[2] != "sft" for r in rows)
    assert first[("vjepa2", 0, "sara")]["align"] != first[("oracle", 0, "sara")]["align"]
    assert (out / "cache" / "vjepa2" / "motion_head").is_dir() and (out / "cache" / "oracle" / "motion_head").is_dir()

    results = json.loads((out / "results.json").read_text())
    assert results["base"]["gate"]["passed"]
    for name in ("seen", "unseen"):
        tables = results["final"][name]["oracle"]
        assert set(tables["arms"]) == set(ARMS) and tables["arms"]["sara"]["all"]["n"] == 4  # 2 seeds × 2 prompts
        assert set(tables["paired"]) == {
            "trd − sft", "moalign − sft", "sara − sft", "moalign − trd", "sara − trd", "sara − moalign"
        }  # fmt: skip
        # steps 0, 1, 2; the unseen pairs 0 and 2
        assert len(results["curves"][name]["vjepa2"]["trd"]["binding"]) == {"seen": 3, "unseen": 2}[name]
        # step 0 is the base: the same scores for every arm
        assert len({json.dumps(arm["all"][0]) for arm in results["curves"][name]["vjepa2"].values()}) == 1
    table = (out / "table.md").read_text()
    assert "| ground truth |" in table and "| base (step 0) |" in table and "| sara − moalign |" in table
    assert "step 2" in table and "unseen colour–shape pairs" in table and "wall time" in table
    for name in ("curves.png", "frames.png", "report.html"):
        assert (out / name).stat().st_size > 0
    assert "table:" in capsys.readouterr().out

    # sft reads no teacher: under the oracle, trained straight to step 2 (not extended from step 1),
    # it ends where the shared run (teacher vjepa2) ended, tensor for tensor
    oracle_sft = arm_config(config, "oracle", 0, "sft")
    oracle_sft.models.teacher = "oracle"
    oracle_sft.precompute.cache_dir = str(out / "cache" / "oracle")
    oracle_sft.out_dir, oracle_sft.optim.steps = str(tmp_path / "sft-oracle"), 2
    train(oracle_sft, progress=False)
    shared = transformer_weights(RunDir(runs[("vjepa2", 0, "sft")]).pipeline)
    alone = transformer_weights(RunDir(tmp_path / "sft-oracle").pipeline)
    assert shared.keys() == alone.keys() and all(torch.equal(shared[k], alone[k]) for k in shared)

    # a second call trains nothing
    exported = {run: (RunDir(run).pipeline / "model_index.json").stat().st_mtime_ns for run in set(runs.values())}
    assert main(["repro", "study", "--config", "configs/repro.yaml", *args]) == 0
    assert exported == {run: (RunDir(run).pipeline / "model_index.json").stat().st_mtime_ns for run in exported}

    # a run that would start elsewhere (here: the untrained preset, not the base) is refused
    elsewhere = arm_config(config, "vjepa2", 0, "trd")
    elsewhere.out_dir, elsewhere.models.wan = str(tmp_path / "elsewhere"), "tiny"
    elsewhere.precompute.cache_dir = str(tmp_path / "elsewhere-cache")  # a cache names the DiT folder it was made for
    precompute(elsewhere, progress=False)
    with pytest.raises(RuntimeError, match="not the base's"):
        check_start(config, elsewhere)


def test_each_paired_difference_appears_once():
    """Against sft, trd and moalign, without mirrors such as `sft − trd` beside `trd − sft`."""
    from sara.shapes.metric import METRICS
    from sara.study.tables import study_tables

    rng = np.random.default_rng(0)
    results = {("t", s, a): [dict.fromkeys(METRICS, rng.random()) for _ in range(4)] for s in (0, 1) for a in ARMS}
    paired = study_tables(results, ["t"], [0, 1], list(ARMS))["t"]["paired"]
    assert list(paired) == ["trd − sft", "moalign − sft", "sara − sft", "moalign − trd", "sara − trd", "sara − moalign"]


def test_points_always_start_at_the_base():
    config = load_config(ReproConfig, "configs/repro.yaml", ["points=[500,250]"])
    assert scoring_points(config) == set_points(config, "seen") == [0, 250, 500]
    assert set_points(config, "unseen") == [0, 500]
    with pytest.raises(ValueError, match="at least one above 0"):
        scoring_points(load_config(ReproConfig, "configs/repro.yaml", ["points=[0]"]))


def test_the_continual_world_is_the_base_worlds_size_and_words(tmp_path, capsys):
    """A continual world drawn at another size, or narrowed apart from the base's, is refused
    before the base trains or anything is drawn; the shipped config passes."""
    check_worlds(load_config(ReproConfig, "configs/repro.yaml", []))
    for override, message in [
        ("world.kinds=[circle,cross]", r"world.kinds: \['circle', 'cross'\], the base's world \['circle', "),
        ("world.size=64", "world: 9 frames at 64², the base's world 9 at 96²"),
    ]:
        config = load_config(ReproConfig, "configs/repro.yaml", [f"out_dir={tmp_path}", override])
        with pytest.raises(ValueError, match=message):
            check_worlds(config)
        assert main(["repro", "study", "--config", "configs/repro.yaml", f"out_dir={tmp_path}", override]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert not list(tmp_path.iterdir())
