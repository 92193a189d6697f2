"""Stage 1 end to end on tiny presets: the real CLI, checkpoints, exact resume, evaluation, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from sara.checkpoint import latest_checkpoint, save_checkpoint
from sara.cli import main
from sara.data.synthetic import SynthSpec, synthesize
from sara.stage1 import train as stage1_train
from sara.stage1.evaluate import METRICS, unrelated_prompts
from sara.stage1.run import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    synthesize(SynthSpec(num=16, seed=3, frames=8, size=64, heldout_fraction=0.25), root, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("shared")  # tiny presets and the token cache, written once


def overrides(world, shared, out, steps=4, **more):
    base = {
        "out_dir": out,
        "data.train": world / "train.jsonl",
        "data.heldout": world / "heldout.jsonl",
        "data.frames": 8,
        "data.size": 64,
        "models.tiny_root": shared / "models",
        "cache_dir": shared / "cache",
        "optim.steps": steps,
        "optim.batch_size": 8,
        "optim.warmup_steps": 1,
        "log_every": 1,
        "eval_every": 2,
        "save_every": 2,
        **more,
    }
    return [f"{k}={v}" for k, v in base.items()]


def test_train_resume_is_exact_and_eval_writes_its_figures(world, shared, tmp_path, capsys, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["stage1", "train", *overrides(world, shared, straight)]) == 0
    assert "M parameters" in capsys.readouterr().out

    def crash_after_step_2(run, step, *args, **kwargs):  # the run dies right after its first checkpoint
        folder = save_checkpoint(run, step, *args, **kwargs)
        if step == 2:
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(stage1_train, "save_checkpoint", crash_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        main(["stage1", "train", *overrides(world, shared, split)])
    monkeypatch.undo()
    assert main(["stage1", "train", "--resume", *overrides(world, shared, split)]) == 0
    assert "resumed from" in capsys.readouterr().out
    curves = [json.loads((run / "history.json").read_text()) for run in (straight, split)]
    assert [r["step"] for r in curves[1]] == [1, 2, 3, 4]
    for a, b in zip(*curves):
        assert a["loss"] == b["loss"] and a["infonce"] == b["infonce"]
    assert latest_checkpoint(straight).name == "step-0000004"
    weights = [load_file(latest_checkpoint(run) / "model.safetensors") for run in (straight, split)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (straight / "tensorboard").is_dir() and any((straight / "tensorboard").iterdir())

    assert main(["stage1", "eval", "--checkpoint", str(straight)]) == 0
    table = capsys.readouterr().out
    metrics = json.loads((straight / "eval.json").read_text())
    assert set(metrics) == set(METRICS) and all(0 <= v <= 1 for v in metrics.values())
    assert "prompted_iou" in table


def test_saved_aligner_gives_identical_saliency(world, shared, tmp_path):
    out = tmp_path / "run"
    assert main(["stage1", "train", *overrides(world, shared, out, steps=2)]) == 0
    _, first, features = load_run(out, progress=False)
    _, second, _ = load_run(latest_checkpoint(out), progress=False)
    held = features["heldout"]
    visual = held.tokens[held.clip_of[:4]]
    text, mask = held.text[held.prompt_row[:4]], held.text_mask[held.prompt_row[:4]]
    assert torch.equal(first.saliency(visual, text, mask), second.saliency(visual, text, mask))


def test_unrelated_prompts_share_no_word_with_the_clip(world, shared, tmp_path):
    out = tmp_path / "run"
    assert main(["stage1", "train", *overrides(world, shared, out, steps=1)]) == 0
    _, _, features = load_run(out, ("train",), progress=False)
    train = features["train"]
    distinct = list(dict.fromkeys(train.prompts))
    for sample, row in enumerate(unrelated_prompts(train).tolist()):
        clip_words = {
            w for s, p in enumerate(train.prompts) if train.clip_of[s] == train.clip_of[sample] for w in p.split()
        }
        assert not set(distinct[row].split()) & clip_words


def test_bad_samples_are_skipped_and_counted(world, shared, tmp_path, caplog):
    records = (world / "train.jsonl").read_text().splitlines()
    broken = [dict(json.loads(records[0]), video="videos/missing.mp4", id="gone")]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([*records, *map(json.dumps, broken)]) + "\n")
    (tmp_path / "videos").symlink_to(world / "videos")
    (tmp_path / "masks").symlink_to(world / "masks")
    args = overrides(world, shared, tmp_path / "run", steps=1, **{"data.train": mixed, "data.max_bad_fraction": 0.5})
    assert main(["stage1", "train", *args]) == 0
    assert "mixed.jsonl: record" in caplog.text and "(gone): video: video file not found" in caplog.text


def test_missing_manifest_and_no_entities_give_one_line_errors(world, shared, tmp_path, capsys):
    assert (
        main(["stage1", "train", *overrides(world, shared, tmp_path / "a", **{"data.train": tmp_path / "no.jsonl"})])
        == 2
    )
    assert "data.train: manifest" in capsys.readouterr().err
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"video": str(world / "videos" / "clip_00000.mp4"), "caption": "a clip"}) + "\n")
    assert main(["stage1", "train", *overrides(world, shared, tmp_path / "b", **{"data.train": plain})]) == 2
    assert "no (clip, entity) sample" in capsys.readouterr().err
