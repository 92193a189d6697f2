"""`sara stage2 plan`: parameters counted on the meta device, memory per GPU by world size."""

import pytest

from sara.cli import main
from sara.models.aligner import parameter_count
from sara.models.presets import resolve
from sara.models.wan import dit_parameters, load_transformers, read_layout
from sara.parallel.plan import PlanSpec, build_on_meta, memory_plan


def test_a_folder_counts_as_its_loaded_model(tmp_path):
    folder = resolve("tiny", "wan-a14b", tmp_path)
    experts, projectors = build_on_meta(PlanSpec(str(folder), experts=2, vfm_dim=24))
    loaded = load_transformers(read_layout(folder))
    assert [parameter_count(m) for m in experts] == [parameter_count(m) for m in loaded.values()]
    assert all(p.is_meta for m in experts + projectors for p in m.parameters())


def test_a_folders_dit_is_counted_from_its_file_headers(tmp_path):
    folder = resolve("tiny", "wan-medium", tmp_path)
    loaded = load_transformers(read_layout(folder))["high"]
    assert dit_parameters(folder) == parameter_count(loaded)
    assert 0.9e6 < dit_parameters(folder) < 1.0e6  # between tiny (0.15 M) and small (12 M)


def test_sharded_parts_fall_as_one_over_the_world():
    spec = PlanSpec("wan2.2-ti2v-5b", ema=True)
    eight, sixteen = memory_plan(spec, 8), memory_plan(spec, 16)
    assert 4.9 < eight["trained_b"] < 5.1 and eight["frozen_b"] == 0  # the 5 B DiT, fully trained
    for part in ("parameters", "gradients", "optimizer", "ema"):
        assert sixteen[part] == pytest.approx(eight[part] / 2)
    assert sixteen["gathered"] == eight["gathered"]  # one block, whole, whatever the world
    lora = memory_plan(PlanSpec("wan2.2-t2v-a14b", experts=2, lora_rank=16), 8)
    assert lora["frozen_b"] > 28 and lora["optimizer"] < eight["optimizer"] / 10


def test_plan_command_prints_a_row_per_world(capsys):
    assert main(["stage2", "plan", "--model", "wan2.2-t2v-a14b", "--world", "8", "16", "--ema"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith(("8 |", "16 |"))]
    assert len(rows) == 2
    assert main(["stage2", "plan", "--model", "nowhere", "--world", "8"]) == 2
    assert (
        "--model: nowhere is neither one of wan2.2-ti2v-5b, wan2.2-t2v-a14b nor a Wan folder" in capsys.readouterr().err
    )
