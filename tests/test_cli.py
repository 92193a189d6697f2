"""The `sara` command: budget, demo and bench through the real entry points."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from sara.cli import main
from sara.data.manifest import load_manifest
from sara.stage1.evaluate import METRICS


@pytest.fixture
def mask_048():
    mask = torch.zeros(2, 1250)
    mask[:, :600] = 1  # p = 0.48
    return mask


def test_budget_prints_the_pair_shares(tmp_path, mask_048, capsys):
    path = tmp_path / "saliency.pt"
    torch.save(mask_048, path)
    assert main(["budget", str(path)]) == 0
    out = capsys.readouterr().out
    assert "FG fraction 48.0 %" in out
    uniform = next(line for line in out.splitlines() if line.startswith("pairs (uniform)"))
    assert uniform.split()[-3:] == ["23.0", "49.9", "27.0"]
    mass_or = next(line for line in out.splitlines() if line.startswith("mass or"))
    assert mass_or.split()[-1] == "73.0"


def test_budget_reads_npz_and_prints_json(tmp_path, mask_048, capsys):
    path = tmp_path / "saliency.npz"
    np.savez(path, saliency=mask_048[0].numpy())
    assert main(["budget", str(path), "--json"]) == 0
    budget = json.loads(capsys.readouterr().out)
    assert budget["tokens"] == 1250
    assert budget["modes"]["or"]["active_pairs"] == pytest.approx(0.7296)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.pt", None, "missing.pt: file not found"),
        ("cube.pt", torch.rand(2, 3, 4), r"cube.pt: expected a saliency of shape \[B, N\] or \[N\], got \(2, 3, 4\)"),
        ("big.pt", torch.full((1, 5), 2.0), r"big.pt: saliency: .* outside \[0, 1\]"),
        ("broken.pt", b"not a torch file", "broken.pt: cannot be read"),
        ("table.csv", b"0.1,0.2", "table.csv: unsupported file type '.csv'"),
    ],
)
def test_budget_bad_file_is_one_line_naming_it(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if isinstance(content, torch.Tensor):
        torch.save(content, path)
    elif content is not None:
        path.write_bytes(content)
    assert main(["budget", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert __import__("re").search(message, err), err


def test_help_imports_no_model_library():
    code = "import sys; from sara.cli import build_parser; build_parser(); print(sorted(m for m in ('transformers', 'diffusers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_cuda_on_a_machine_without_it_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "trd", "--device", "cuda", "--tokens", "64"]) == 2
    assert capsys.readouterr().err.strip() == "sara: error: device cuda: CUDA is not available on this machine"


def test_python_dash_m_and_config_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sara", "demo", f"out_dir={tmp_path}", "trd.margni=0.2"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "sara: error: command line: trd.margni: unknown key; did you mean 'trd.margin'?"


@pytest.mark.slow
def test_demo_writes_a_self_contained_report(tmp_path, capsys):
    out = tmp_path / "demo"
    small = ["budget.grid=[4,8,8]", "budget.feature_dim=32", "data.num=5", "data.frames=9", "data.size=64"]
    small += [
        "stage1_world.num=12",
        "stage1_world.frames=8",
        "stage1_world.size=64",
        "stage1_world.heldout_fraction=0.25",
    ]
    small += ["stage1.data.frames=8", "stage1.data.size=64", "stage1.optim.steps=2", "stage1.optim.batch_size=8"]
    small += [
        "stage2_world.num=4",
        "stage2_world.frames=9",
        "stage2_world.size=64",
        "stage2_world.heldout_fraction=0.5",
    ]
    small += ["stage2.data.frames=9", "stage2.data.size=64", "stage2.models.text_length=32", "stage2.optim.steps=2"]
    small += ["stage2.optim.batch_size=2"]  # the two training clips of stage2_world
    small += ["stage2.models.wan=tiny"]  # the shapes VAE trains for minutes: tests/test_shapes_vae.py
    small += ["stage2.validation.heldout=${out_dir}/shapes17/heldout.jsonl", "stage2.validation.loss_every=1"]
    small += ["stage2.log_every=1"]
    small += ["generate_steps=2", "bench_steps=1", "eval_prompts=3", "lora_steps=2"]
    assert main(["demo", f"out_dir={out}", *small, "grid.frames=8", "grid.size=64"]) == 0
    files = ["config.yaml", "budget.txt", "budget.json", "budget.png", "example_saliency.png", "report.html"]
    files += ["data/train.jsonl", "data/heldout.jsonl", "data_masks.png", "data_budget.png", "data_budget.txt"]
    for name in files:
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.html").read_text()
    heldout = json.loads((out / "shapes" / "heldout.jsonl").read_text().splitlines()[0])
    figures = sorted((out / "stage1_figures" / heldout["id"]).glob("*.png"))
    assert len(figures) == len(heldout["entities"]) + 1  # each entity, then the full caption
    # + stage 2 loss and frames, eval frames, timestep densities
    assert report.count("data:image/png;base64,") == 6 + len(figures) + 4
    assert report.count("data:image/gif;base64,") == 2
    assert "Stage 2: the DiT with SARA" in report and "sara_online" in report
    assert len(list((out / "stage2_videos").glob("*.mp4"))) == 2
    assert "http://" not in report and "https://" not in report
    assert "Data: the synthetic shapes world" in report and "0 problem(s)" in report
    assert "Pair budget" in report and "dense vs blockwise" in report
    assert "Evaluation: the exact shapes metric" in report and len(list((out / "eval_videos").glob("*.mp4"))) == 3
    scores = json.loads((out / "eval_shapes.json").read_text())
    assert scores["mismatched prompts (floor)"]["all"]["mean"] == 0.0 and len(scores) == 3
    assert "SAM 3 masks" in report and "Stage 1: the Semantic Aligner" in report and "prompted_iou" in report
    assert set(json.loads((out / "stage1" / "eval.json").read_text())) == set(METRICS)
    assert "retrieval_r1_shuffled" in report and "every entity shows at least" in report
    budget = json.loads((out / "budget.json").read_text())
    assert budget["hard mask"]["fg_fraction"] == pytest.approx(0.48, abs=1 / 256)
    assert "grid:\n  - 4\n  - 8\n  - 8" in (out / "config.yaml").read_text()
    printed = capsys.readouterr().out
    assert "hard mask" in printed and "report:" in printed
    # the Wan-trainer conventions: imports, adapter files that give the merged outputs, a single file back
    assert "Working with other Wan trainers" in report and "sara+lora8+fp8" in report
    world = load_manifest(out / "shapes17" / "train.jsonl").records[:4]
    for name in ("musubi", "metadata", "captioned"):
        imported = load_manifest(out / "imports" / f"{name}_manifest.jsonl").records
        assert [r.prompt() for r in imported] == [r.prompt() for r in world]
    deviations = re.findall(r"adapter (\S+) into a fresh WanPipeline: max \|output − merged output\| (\S+)", printed)
    assert [name for name, _ in deviations] == ["transformer.safetensors", "transformer_comfyui.safetensors"]
    assert all(float(value) < 1e-4 for _, value in deviations)
    assert re.search(r"(\d+) of \1 tensors equal", printed) and "val/flow" in report


@pytest.mark.slow
def test_bench_trd_prints_a_row_per_size_and_mode(capsys):
    args = [
        "bench",
        "trd",
        "--tokens",
        "64",
        "--dim",
        "16",
        "--repeats",
        "1",
        "--min-seconds",
        "0",
        "--modes",
        "none",
        "or",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip().split(" ")[0].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("64", "none"), ("64", "or")]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 2
    for row in data:
        for path in ("dense", "blockwise"):
            assert row[path]["seconds"] > 0 and row[path]["gflops"] > 0 and row[path]["peak_gib"] >= 0
        assert row["matmul_gflops"] > 0


def test_the_demo_empties_only_its_own_folder(tmp_path):
    """A second demo run starts afresh (an old cache would be refused), keeping the tiny
    presets; a folder that is not a demo's is never emptied."""
    from sara.demo.run import _fresh_folder

    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ValueError, match="holds files of something other than a demo run"):
        _fresh_folder(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    demo = _fresh_folder(tmp_path / "demo")
    for folder in ("models", "stage2"):
        (demo / folder).mkdir()
        (demo / folder / "file").write_text("")
    (demo / "report.html").write_text("")
    _fresh_folder(demo)
    assert sorted(p.name for p in demo.iterdir()) == [".sara-demo", "models"] and (demo / "models" / "file").is_file()
