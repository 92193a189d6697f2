"""`sara repro base` at a smoke size: the study world synthesised, the DiT pretrained, the
held-out prompts sampled and scored against the gate; found again, not retrained, on a
second call; a changed recipe makes another base; a failed gate exits 1."""

import json
import shutil

import pytest
from repro_smoke import BASE_SMOKE

from sara.cli import main
from sara.config import load_config
from sara.config.repro import ReproConfig
from sara.study.base import base_folder, base_key

pytestmark = pytest.mark.slow


def _config(*overrides: str) -> ReproConfig:
    return load_config(ReproConfig, "configs/repro.yaml", [*BASE_SMOKE, *overrides])


def test_base_is_pretrained_gated_and_found_again(tmp_path, capsys):
    args = [f"out_dir={tmp_path}", *BASE_SMOKE]
    assert (
        main(["repro", "base", "--config", "configs/repro.yaml", *args, "base.gate_binding=0", "base.gate_all=0"]) == 0
    )
    folder = base_folder(_config(f"out_dir={tmp_path}"))
    report = json.loads((folder / "gate.json").read_text())
    assert report["gate"]["passed"] and report["steps"] == 2 and report["prompts"] == 2
    assert set(report["scores"]) == {"presence", "binding", "direction", "count", "persistence", "all"}
    assert len(list((folder / "videos").glob("*.mp4"))) == 2
    history = json.loads((folder / "run" / "history.json").read_text())
    assert [row["step"] for row in history] == [1, 2] and all(row["align"] == 0 for row in history)  # flow alone
    assert report["ceiling"]["clips"] == 6 and report["ceiling"]["scores"]["presence"]["mean"] == 1.0
    printed = capsys.readouterr().out
    assert set(report["reconstruction"]) == set(report["scores"])
    assert (
        "ceiling (6 clips)" in printed
        and "VAE reconstruction" in printed
        and "gate (binding >= 0.0, all >= 0.0): passed" in printed
    )

    # found again: nothing trained, the training time of the first call kept; a stricter gate fails
    exported = (folder / "run" / "pipeline" / "model_index.json").stat().st_mtime_ns
    assert main(["repro", "base", "--config", "configs/repro.yaml", *args, "base.gate_binding=1"]) == 1
    assert (folder / "run" / "pipeline" / "model_index.json").stat().st_mtime_ns == exported
    again = json.loads((folder / "gate.json").read_text())
    assert again["seconds"] == report["seconds"] and not again["gate"]["passed"]
    assert "NOT passed" in capsys.readouterr().out


def test_base_key_follows_the_recipe_not_the_paths():
    key = base_key(_config().base)
    assert base_key(_config("out_dir=/elsewhere", "base.stage2.models.tiny_root=/x").base) == key
    assert base_key(_config("base.stage2.optim.steps=3").base) != key
    assert base_key(_config("base.world.entity_share=0.1").base) != key
    assert base_key(_config("base.gate_all=0.9").base) == key  # the gate judges a base, it does not make one


def test_a_committed_base_is_installed_not_trained(tmp_path, capsys):
    # a base trained once, its DiT and gate report committed; then its folder gone
    args = ["repro", "base", "--config", "configs/repro.yaml", f"out_dir={tmp_path}", *BASE_SMOKE]
    assert main([*args, "base.gate_binding=0", "base.gate_all=0"]) == 0
    folder = base_folder(_config(f"out_dir={tmp_path}"))
    committed = tmp_path / "bases" / folder.name
    shutil.copytree(folder / "run" / "pipeline" / "transformer", committed / "transformer")
    made = json.loads((folder / "gate.json").read_text()) | {"seconds": 1234.5}
    (committed / "gate.json").write_text(json.dumps(made))
    shutil.rmtree(folder)
    capsys.readouterr()

    assert main([*args, "base.gate_binding=0", "base.gate_all=0", f"base.committed={tmp_path / 'bases'}"]) == 0
    assert not (folder / "run" / "checkpoints").exists()  # nothing trained
    weights = "transformer/diffusion_pytorch_model.safetensors"
    assert (folder / "run" / "pipeline" / weights).read_bytes() == (committed / weights).read_bytes()
    report = json.loads((folder / "gate.json").read_text())
    assert report["committed"] == str(committed) and report["seconds"] == 1234.5
    assert len(list((folder / "videos").glob("*.mp4"))) == 2 and report["ceiling"]["clips"] == 6  # gated here
    assert f"weights: installed from {committed}" in capsys.readouterr().out
