"""Stage 1 end to end on tiny presets: the real CLI, checkpoints, exact resume, evaluation, bad input."""

import json

import pytest
import torch
from distributed import spawn
from PIL import Image
from safetensors.torch import load_file
from stage1_ranks import features_on_rank

from sara.cli import main
from sara.config import load_config
from sara.config.stage1 import Stage1Config
from sara.data.manifest import load_manifest
from sara.data.masks import save_mask
from sara.data.video import decode_clip
from sara.shapes.render import SynthSpec, synthesize
from sara.stage1.evaluate import METRICS, embed_clips, unrelated_prompts
from sara.stage1.features import fingerprint
from sara.stage1.run import load_run
from sara.stage1.train import load_encoders
from sara.trainer.checkpoint import PendingCheckpoint, latest_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(shapes_world):
    return shapes_world(num=16, seed=3, frames=8, size=64, heldout_fraction=0.25)


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

    publish = PendingCheckpoint.publish

    def crash_after_step_2(pending):  # the run dies right after its first checkpoint
        folder = publish(pending)
        if folder.name == "step-0000002":
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(PendingCheckpoint, "publish", crash_after_step_2)
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
    assert train.whole.any()  # full-caption rows sit between entity rows in the text table
    entities = train.select(~train.whole)
    prompt_of = dict(zip(train.prompt_row.tolist(), train.prompts))  # row of the text table → its prompt
    for sample, row in enumerate(unrelated_prompts(entities).tolist()):
        clip_words = {
            w
            for s, p in enumerate(entities.prompts)
            if entities.clip_of[s] == entities.clip_of[sample]
            for w in p.split()
        }
        assert not set(prompt_of[row].split()) & clip_words


def test_full_caption_samples_target_the_union_of_the_entities(world, shared, tmp_path):
    out = tmp_path / "run"
    assert main(["stage1", "train", *overrides(world, shared, out, steps=1)]) == 0
    _, _, features = load_run(out, ("train",), progress=False)
    train = features["train"]
    wholes = train.whole.nonzero().squeeze(1).tolist()
    assert len(wholes) == len(train.records)  # every clip of the shapes world has all its masks
    for row in wholes:
        clip = train.clip_of[row]
        entities = [s for s in range(len(train)) if train.clip_of[s] == clip and not train.whole[s]]
        parts = train.targets[entities]  # (E, N)
        caption = load_manifest(world / "train.jsonl").records[train.records[clip]].prompt()
        assert train.prompts[row] == caption and caption not in [train.prompts[e] for e in entities]
        assert (train.targets[row] >= parts.amax(0) - 1e-6).all() and (train.targets[row] <= parts.sum(0) + 1e-6).all()
    metrics = json.loads((out / "eval.json").read_text())
    assert "caption_iou" in metrics

    off = tmp_path / "off"
    assert main(["stage1", "train", *overrides(world, shared, off, steps=1, **{"data.caption_samples": False})]) == 0
    _, _, features = load_run(off, ("train",), progress=False)
    assert not features["train"].whole.any() and "caption_iou" not in json.loads((off / "eval.json").read_text())


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


def test_too_many_bad_samples_stop_the_run_with_one_line(world, shared, tmp_path, capsys):
    records = [json.loads(line) for line in (world / "train.jsonl").read_text().splitlines()]
    broken = [dict(r, video="videos/missing.mp4") for r in records]
    mixed = tmp_path / "mostly_broken.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in records[:1] + broken))
    (tmp_path / "videos").symlink_to(world / "videos")
    (tmp_path / "masks").symlink_to(world / "masks")
    args = overrides(world, shared, tmp_path / "run", steps=1, **{"data.train": mixed})
    assert main(["stage1", "train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sara: error: ") and "samples could not be loaded" in err[-1]
    assert not any("Traceback" in line for line in err)


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


def test_infer_draws_every_prompt_and_the_full_caption(world, shared, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "figures"
    assert main(["stage1", "train", *overrides(world, shared, run, steps=1)]) == 0
    manifest = world / "heldout.jsonl"
    record = json.loads(manifest.read_text().splitlines()[0])
    assert main(["stage1", "infer", str(manifest), "--checkpoint", str(run), "--out", str(out), "--columns", "4"]) == 0
    folder = out / record["id"]
    stems = [f"entity-{k}-{e['prompt'].replace(' ', '-')}" for k, e in enumerate(record["entities"])] + ["caption"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.{x}" for s in stems for x in ("png", "gif", "mp4"))
    for stem in stems:  # 8 frames of 64²: three rows of 4 frames under a 14-pixel title; panels side by side
        assert Image.open(folder / f"{stem}.png").size == (4 * 64 + 3 * 2, 14 + 3 * 64 + 2 * 2)
        gif = Image.open(folder / f"{stem}.gif")
        assert gif.size == (3 * 64 + 2 * 2, 14 + 64) and gif.n_frames == 8
        video = decode_clip(folder / f"{stem}.mp4", None, None)
        assert video.frames.shape == (8, 3, 14 + 64, 3 * 64 + 2 * 2)


def test_infer_without_masks_and_bad_records(world, shared, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["stage1", "train", *overrides(world, shared, run, steps=1)]) == 0
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"video": str(world / "videos" / "clip_00000.mp4"), "caption": "a red circle"}) + "\n")
    args = ["stage1", "infer", str(plain), "--checkpoint", str(run), "--out", str(tmp_path / "out")]
    assert main([*args, "--prompt", "red circle"]) == 0
    assert (tmp_path / "out" / "record-00000" / "entity-0-red-circle.png").is_file()
    assert (tmp_path / "out" / "record-00000" / "caption.gif").is_file()
    assert main([*args, "--records", "3"]) == 2
    assert "plain.jsonl: record 3: out of range (1 records)" in capsys.readouterr().err

    record = json.loads((world / "train.jsonl").read_text().splitlines()[0])
    record["video"] = str(world / record["video"])
    record["entities"][0]["mask"] = str(save_mask(tmp_path / "short.npz", torch.zeros(3, 64, 64, dtype=torch.bool)))
    (tmp_path / "mismatch.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["stage1", "infer", str(tmp_path / "mismatch.jsonl"), "--checkpoint", str(run)]) == 2
    error = capsys.readouterr().err
    assert "mismatch.jsonl: record 0 (clip_00000): entities.0.mask: mask shape (3, 64, 64) does not match" in error


def test_infonce_targets_are_one_full_caption_per_clip(world, shared, tmp_path):
    out = tmp_path / "run"
    assert main(["stage1", "train", *overrides(world, shared, out, steps=1)]) == 0
    _, _, features = load_run(out, ("train",), progress=False)
    train = features["train"]
    captions = [load_manifest(world / "train.jsonl").records[r].prompt() for r in train.records]
    assert len(train.embeddings) == len(set(captions)) and len(train.clip_caption) == len(train.tokens)
    for clip, caption in enumerate(captions):  # clips with the same caption share a row
        assert captions.index(caption) == train.clip_caption.tolist().index(train.clip_caption[clip].item())


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory, shared):
    """An aligner trained for 150 steps on 180 clips; 60 held-out clips to retrieve among."""
    root = tmp_path_factory.mktemp("retrieval")
    synthesize(SynthSpec(num=240, seed=7, frames=8, size=64, heldout_fraction=0.25), root, workers=2, progress=False)
    more = {"optim.batch_size": 32, "loss.infonce": 1.0, "log_every": 50, "eval_every": 150, "save_every": 150}
    assert main(["stage1", "train", *overrides(root, shared, root / "run", steps=150, **more)]) == 0
    return root / "run"


def test_video_to_text_retrieval_needs_the_video(retrieval_run):
    """Each clip's embedding comes from its video alone: with the right videos it finds its
    caption well above chance; with the videos moved to other captions, at chance."""
    metrics = json.loads((retrieval_run / "eval.json").read_text())
    chance = metrics["retrieval_chance"]
    assert chance == pytest.approx(1 / 60)
    assert metrics["retrieval_r1"] >= 3 * chance
    _, aligner, features = load_run(retrieval_run, progress=False)
    held = features["heldout"]
    video = embed_clips(aligner, held.tokens, torch.device("cpu"))  # (C, E)
    candidates = held.clip_caption.unique()
    hits = lambda emb: (candidates[(emb @ held.embeddings[candidates].T).argmax(-1)] == held.clip_caption).float()  # noqa: E731
    assert hits(video).mean().item() == pytest.approx(metrics["retrieval_r1"])
    shuffled = torch.stack([hits(video.roll(k, dims=0)) for k in range(1, 30)]).mean().item()  # 29 shuffles
    assert shuffled <= 2 * chance and metrics["retrieval_r1_shuffled"] <= 2 * chance


def _tensor_bytes(obj) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, torch.Tensor))


def test_features_stay_on_disk_and_read_back_exactly(world, shared, tmp_path):
    """Memory holds an index row per sample whatever the data set's size; every table reads
    back the rows the encoders made."""
    out = tmp_path / "run"
    assert main(["stage1", "train", *overrides(world, shared, out, steps=1)]) == 0
    config, _, features = load_run(out, ("train", "heldout"), progress=False)
    for table in features.values():
        assert all(_tensor_bytes(t) == 0 for t in (table.tokens, table.text, table.text_mask, table.targets))
        # clip_of, prompt_row (int64), whole (bool) per sample; clip_caption (int64) per clip: no N, D or L
        assert _tensor_bytes(table) == 17 * len(table) + 8 * len(table.tokens)
    train = features["train"]
    encoders = load_encoders(config, torch.device("cpu"))
    prompt = train.prompts[3]
    states, mask = encoders.captions([prompt])  # (1, l, Dt), (1, l)
    row = train.prompt_row[3]
    length = mask.shape[1]
    torch.testing.assert_close(train.text[row][:length], states[0], rtol=1e-4, atol=1e-5)  # alone, not in a batch
    assert torch.equal(train.text_mask[row][:length], mask[0]) and not train.text_mask[row][length:].any()
    caption_row = train.clip_caption[0].item()
    record = load_manifest(world / "train.jsonl").records[train.records[0]]
    torch.testing.assert_close(
        train.embeddings[caption_row], encoders.embedder([record.prompt()])[0], rtol=1e-4, atol=1e-5
    )
    assert train.tokens[[0, 1]].shape == (2, *train.tokens.shape[1:]) and train.targets[:].shape == train.targets.shape


def test_ranks_share_the_features_work_and_get_those_of_one_process(world, shared, tmp_path):
    """Under torchrun each clip is decoded and encoded by one rank, each prompt and caption
    encoded by one rank, and every rank reads the features one process computes."""
    one, *ranks = [
        result
        for size in (1, 2)
        for result in spawn(
            features_on_rank,
            size,
            overrides(world, shared, tmp_path / "run", cache_dir=tmp_path / f"cache-{size}", **{"data.num_workers": 0}),
        )
    ]
    for name in ("tokens", "targets", "text", "text_mask", "embeddings", "clip_of", "prompt_row", "whole"):
        for rank in ranks:
            torch.testing.assert_close(rank[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    assert all(r["prompts_of"] == one["prompts_of"] and r["records"] == one["records"] for r in ranks)
    for work in ("decoded", "prompts", "captions"):  # split, not repeated (texts by chunks of 64)
        shares = [r[work] for r in ranks]
        assert sorted(shares[0] + shares[1]) == sorted(one[work]), work
    assert ranks[0]["decoded"] and ranks[1]["decoded"]
    assert sum(r["clips"] for r in ranks) == one["clips"] == len(one["records"])


def test_encoders_load_in_the_compute_dtype_and_key_the_token_cache_by_it(world, shared, tmp_path):
    """bf16 (a GPU run's `auto`) loads all three frozen models in bf16 and caches its V-JEPA
    tokens apart from fp32 ones; the tokens stay close to fp32's."""
    configs = {
        dtype: load_config(Stage1Config, None, overrides(world, shared, tmp_path, **{"parallel.param_dtype": dtype}))
        for dtype in ("float32", "bfloat16")
    }
    encoders = {dtype: load_encoders(config, torch.device("cpu")) for dtype, config in configs.items()}
    half = encoders["bfloat16"]
    assert {p.dtype for m in (half.video, half.captions, half.embedder) for p in m.parameters()} == {torch.bfloat16}
    data = configs["float32"].data
    assert fingerprint(half.video, data, 0) != fingerprint(encoders["float32"].video, data, 0)
    frames = decode_clip(world / load_manifest(world / "train.jsonl").records[0].video, 8, (64, 64)).frames[None]
    tokens = {dtype: e.video(frames) for dtype, e in encoders.items()}  # (1, N, D) float32 both
    torch.testing.assert_close(tokens["bfloat16"], tokens["float32"], rtol=0.1, atol=0.1)
