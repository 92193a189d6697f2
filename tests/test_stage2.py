"""Stage 2 end to end on tiny presets: precompute, train, resume, export, generate, through the real CLI."""

import json
import logging
from unittest import mock

import pytest
import torch
from diffusers import WanPipeline
from references import trainable_weights
from safetensors import safe_open
from safetensors.torch import load_file

from sara.cli import main
from sara.config import load_config
from sara.config.stage2 import Stage2Config
from sara.data.video import decode_clip, write_video
from sara.models.presets import wan_folder
from sara.models.wan import load_transformers, read_layout
from sara.parallel.context import set_attention
from sara.run_dir import RunDir
from sara.stage1.saliency import SaliencyModel
from sara.stage2.adapters import adapter_deviation, transformer_outputs
from sara.stage2.build import resolve_setup
from sara.stage2.cache_index import from_columns, to_columns
from sara.stage2.clips import DecodedClips, OnlineClips, drop_captions
from sara.stage2.encoders import Stage2Encoders
from sara.trainer.checkpoint import PendingCheckpoint, latest_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(shapes_world):
    return shapes_world(num=6, seed=5, frames=9, size=64, heldout_fraction=0.0)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("shared")


def overrides(world, shared, out, steps=4, **more):
    base = {
        "out_dir": out,
        "data.train": world / "train.jsonl",
        "data.frames": 9,
        "data.size": 64,
        "models.tiny_root": shared / "models",
        "models.text_length": 32,
        "precompute.cache_dir": shared / "cache",
        "precompute.shard_size": 4,
        "objective.align.saliency": "masks",
        "optim.steps": steps,
        "optim.batch_size": 2,
        "optim.warmup_steps": 1,
        "log_every": 1,
        "save_every": 2,
        **more,
    }
    return [f"{k}={v}" for k, v in base.items()]


def test_precompute_is_sharded_and_resumable(world, shared, tmp_path, capsys):
    args = overrides(world, shared, tmp_path / "run", **{"precompute.cache_dir": tmp_path / "cache"})
    assert main(["stage2", "precompute", *args]) == 0
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    rows = from_columns(index["clips"])
    assert sorted(map(int, rows)) == list(range(6))
    assert sorted({row["shard"] for row in rows.values()}) == [
        "shard-000-00000.safetensors",
        "shard-000-00001.safetensors",
    ]
    assert rows["0"]["shapes"]["latents"] == [16, 3, 8, 8]  # what opening the cache reads
    shard = load_file(tmp_path / "cache" / "shard-000-00000.safetensors")
    assert shard["0/latents"].shape == (16, 3, 8, 8)  # 9 frames of 64² → 3 latent frames of 8²
    assert shard["0/vfm"].shape == (64, 192) and shard["0/mask_saliency"].shape == (64,)  # V-JEPA (4, 4, 4)
    assert shard["0/text"].shape[0] <= 32 and shard["0/text"].abs().amax(-1)[-1] > 0  # trailing padding trimmed

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("shard-*")}
    (tmp_path / "cache" / "shard-000-00001.safetensors").unlink()  # as if killed before the last shard
    kept = {r: row for r, row in rows.items() if row["shard"] != "shard-000-00001.safetensors"}
    (tmp_path / "cache" / "index.json").write_text(json.dumps(index | {"clips": to_columns(kept)}))
    assert main(["stage2", "precompute", *args]) == 0
    after = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert after["clips"]["records"] == list(range(6))
    assert (tmp_path / "cache" / "shard-000-00000.safetensors").stat().st_mtime_ns == before[
        "shard-000-00000.safetensors"
    ]

    view = {"precompute.cache_dir": tmp_path / "view", "models.vjepa2_stride": 2, "models.vjepa2_short_side": 32}
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "run", **view)]) == 0
    shard = load_file(tmp_path / "view" / "shard-000-00000.safetensors")
    assert shard["0/vfm"].shape == (8, 192) and shard["0/mask_saliency"].shape == (8,)  # frames 1, 3, 5, 7 at 32²
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "view-run", steps=1, **view)]) == 0

    half = {"precompute.cache_dir": tmp_path / "half", "precompute.dtype": "bfloat16"}
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "run", **half)]) == 0
    assert load_file(tmp_path / "half" / "shard-000-00000.safetensors")["0/vfm"].dtype == torch.bfloat16
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "half-run", steps=1, **half)]) == 0

    changed = overrides(
        world, shared, tmp_path / "run", **{"precompute.cache_dir": tmp_path / "cache", "data.size": 128}
    )
    assert main(["stage2", "precompute", *changed]) == 2
    assert "cache made with other settings (sizes)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "ema, asynchronous, decay, workers",
    [(None, False, "constant", 0), (0.5, False, "cosine", 0), (None, True, "constant", 0), (0.5, False, "cosine", 2)],
)
def test_train_resume_is_exact_and_exports_a_pipeline(
    world, shared, tmp_path, monkeypatch, ema, asynchronous, decay, workers
):
    """Interrupted after step 2 and resumed, a run is the uninterrupted one; ``workers``: the
    interrupted run reads its batches ahead in loader processes, the other in its steps."""
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x")]) == 0
    straight, split = tmp_path / "straight", tmp_path / "split"
    # asynchronous: step 2's shards are written in the background and published when step 4's begin
    more = {"optim.ema_decay": "null" if ema is None else ema, "async_save": asynchronous, "optim.lr_decay": decay}
    assert main(["stage2", "train", *overrides(world, shared, straight, **more)]) == 0
    more["data.num_workers"] = workers

    publish = PendingCheckpoint.publish

    def crash_after_step_2(pending):  # the run dies right after its first checkpoint
        folder = publish(pending)
        if folder.name == "step-0000002":
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(PendingCheckpoint, "publish", crash_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        main(["stage2", "train", *overrides(world, shared, split, **more)])
    monkeypatch.undo()
    assert main(["stage2", "train", *overrides(world, shared, split, **more), "--resume", "latest"]) == 0
    curves = [json.loads((run / "history.json").read_text()) for run in (straight, split)]
    assert [r["step"] for r in curves[1]] == [1, 2, 3, 4]
    assert [r["loss"] for r in curves[0]] == [r["loss"] for r in curves[1]]
    assert [r["lr"] for r in curves[0]] == [r["lr"] for r in curves[1]]  # the schedule resumes where it was
    after_warmup = [r["lr"] for r in curves[0]]  # a one-step warm-up reaches the full lr at once
    if decay == "cosine":
        assert after_warmup == sorted(after_warmup, reverse=True) and after_warmup[-1] < 0.5 * after_warmup[0]
    else:
        assert len(set(after_warmup)) == 1
    assert all(r["align"] > 0 for r in curves[0])
    weights = [trainable_weights(latest_checkpoint(run)) for run in (straight, split)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    pipes = [WanPipeline.from_pretrained(run / "pipeline").transformer.state_dict() for run in (straight, split)]
    assert all(torch.equal(pipes[0][k], pipes[1][k]) for k in pipes[0])  # the EMA, too, resumes exactly
    trained = {k.removeprefix("experts.high."): v for k, v in weights[0].items() if k.startswith("experts.high.")}
    same = [torch.equal(pipes[0][k], v) for k, v in trained.items()]
    assert all(same) if ema is None else not all(same)  # with an EMA the pipeline holds the average


def test_cache_fed_and_online_training_give_the_same_losses(world, shared, tmp_path):
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x")]) == 0
    runs = {}
    for online in (False, True):
        out = tmp_path / f"online-{online}"
        assert main(["stage2", "train", *overrides(world, shared, out, steps=2, online=online)]) == 0
        runs[online] = [r["loss"] for r in json.loads((out / "history.json").read_text())]
    assert runs[False] == pytest.approx(runs[True], rel=1e-5)


def test_random_windows_move_each_epoch_and_are_a_function_of_seed_epoch_and_clip(shapes_world, shared, tmp_path):
    """Online training with ``data.window: random`` (9 of 17 frames) asks each step's clips in
    the windows of that step's epoch, and a clip's window is a function of (seed, epoch, clip)."""
    long = shapes_world(num=6, seed=5, frames=17, size=64, heldout_fraction=0.0)
    args = overrides(long, shared, tmp_path / "run", online=True, **{"data.window": "random"})
    with mock.patch.object(DecodedClips, "load", autospec=True, side_effect=DecodedClips.load) as load:
        assert main(["stage2", "train", *args]) == 0  # 6 clips, batches of 2: 3 steps an epoch
    assert [call.args[2] for call in load.call_args_list] == [0, 0, 0, 1]

    config = load_config(Stage2Config, None, args)
    setup = resolve_setup(config)
    clips = OnlineClips(config, setup, torch.device("cpu"))
    first, second = (clips.batch([0, 1], torch.device("cpu"), epoch)["latents"] for epoch in (0, 1))
    assert not torch.equal(first, second)
    again = OnlineClips(config, setup, torch.device("cpu")).batch([0, 1], torch.device("cpu"), 1)["latents"]
    assert torch.equal(again, second)


def test_an_attention_backend_reaches_every_attention_of_the_dit(world, shared, tmp_path, caplog):
    """``parallel.attention`` runs the DiT's attention on that backend (PyTorch's math kernel
    here, the one a CPU has besides the default): the losses of the default, to rounding."""
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "cache")]) == 0
    runs = {}
    caplog.set_level(logging.INFO, logger="sara")
    for backend in ("native", "_native_math"):
        out = tmp_path / backend
        args = overrides(world, shared, out, steps=2, **{"parallel.attention": backend})
        assert main(["stage2", "train", *args]) == 0
        runs[backend] = [row["loss"] for row in json.loads((out / "history.json").read_text())]
    assert "attention backend _native_math on cpu" in caplog.text
    (dit,) = load_transformers(read_layout(wan_folder("tiny", shared / "models"))).values()
    set_attention(dit, "_native_math")
    processors = [m.processor for m in dit.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    assert len(processors) == 2 * len(dit.blocks)  # self- and cross-attention of every block
    assert {str(p._attention_backend.value) for p in processors} == {"_native_math"}
    assert runs["_native_math"] == pytest.approx(runs["native"], rel=1e-5)


def test_heldout_loss_is_logged_beside_the_training_terms(world, shared, tmp_path, capsys):
    """Every `loss_every` steps the held-out batch's terms join that step's history row and
    TensorBoard's val/*; precompute caches the held-out clips beside the training cache; an
    online run gives the same figures; the figures are those of the weights alone (a
    resumed run gives the uninterrupted one's)."""
    cache = tmp_path / "cache"
    held = {"precompute.cache_dir": cache, "validation.heldout": world / "train.jsonl"}
    held |= {"validation.loss_every": 2, "validation.loss_clips": 4}
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x", **held)]) == 0
    assert len(json.loads((cache / "heldout" / "index.json").read_text())["clips"]["records"]) == 6
    runs = {}
    for online in (False, True):
        out = tmp_path / f"online-{online}"
        assert main(["stage2", "train", *overrides(world, shared, out, online=online, **held)]) == 0
        runs[online] = json.loads((out / "history.json").read_text())
    rows = runs[False]
    assert [("val_flow" in r) for r in rows] == [False, True, False, True]
    for row in rows[1::2]:
        assert row["val_loss"] == pytest.approx(row["val_flow"] + 0.5 * row["val_align"])
        assert row["val_flow"] != row["flow"] and row["val_align"] > 0
    assert rows[1]["val_flow"] != rows[3]["val_flow"]  # the weights moved
    online = [r["val_loss"] for r in runs[True][1::2]]
    assert online == pytest.approx([r["val_loss"] for r in rows[1::2]], rel=1e-5)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "online-False" / "tensorboard")).Reload()
    assert {"val/flow", "val/align", "val/loss"} <= set(events.Tags()["scalars"])

    resumed = tmp_path / "resumed"
    assert main(["stage2", "train", *overrides(world, shared, resumed, steps=2, **held)]) == 0
    assert main(["stage2", "train", *overrides(world, shared, resumed, **held), "--resume", "latest"]) == 0
    again = json.loads((resumed / "history.json").read_text())
    assert [r.get("val_loss") for r in again] == [r.get("val_loss") for r in rows]

    bad = {"validation.loss_every": 2}
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "bad", **bad)]) == 2
    assert "validation.loss_every: needs validation.heldout" in capsys.readouterr().err
    apart = held | {"validation.loss_every": 3, "log_every": 2}
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "apart", **apart)]) == 2
    assert "validation.loss_every: 3 must be a multiple of log_every (2)" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"  # a held-out manifest the cache was not made for
    other.write_text("".join((world / "train.jsonl").read_text().splitlines(keepends=True)[:3]))
    unready = tmp_path / "unready"
    assert main(["stage2", "train", *overrides(world, shared, unready, **held | {"validation.heldout": other})]) == 2
    assert "cache made with other settings" in capsys.readouterr().err
    assert not (unready / "tensorboard").exists()  # refused at start-up, before the loop's first step


def test_generate_writes_videos_of_the_requested_frames_and_size(world, shared, tmp_path):
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x")]) == 0
    assert (
        main(
            ["stage2", "train", *overrides(world, shared, tmp_path / "run", steps=1, **{"objective.align.mode": "sft"})]
        )
        == 0
    )
    out = tmp_path / "videos"
    args = ["stage2", "generate", "--pipeline", str(tmp_path / "run" / "pipeline"), "--out", str(out)]
    args += ["--prompt", "a red circle", "--frames", "9", "--height", "64", "--width", "96", "--steps", "2"]
    assert main([*args, "--scheduler", "euler"]) == 0
    video = decode_clip(out / "00-a-red-circle.mp4", None, None)
    assert video.frames.shape == (9, 3, 64, 96)
    assert (out / "00-a-red-circle.gif").stat().st_size > 0


def test_bad_stage2_config_gives_one_line_errors(world, shared, tmp_path, capsys):
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "r"), "--resume", str(tmp_path)]) == 2
    assert "is not a checkpoint folder (no train.pt)" in capsys.readouterr().err
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "a", **{"objective.align.mode": "rep"})]) == 2
    assert "objective.align.mode: must be one of sft, repa, trd, sara" in capsys.readouterr().err
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "b", **{"objective.align.block": 7})]) == 2
    assert "align.block: 7 is out of range for a DiT of 2 blocks" in capsys.readouterr().err
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "c", **{"data.frames": 8})]) == 2
    assert "must be 4k + 1 frames" in capsys.readouterr().err


def test_precompute_stores_the_aligner_saliency_of_the_full_caption(world, shared, tmp_path):
    stage1 = ["out_dir=" + str(tmp_path / "stage1"), f"data.train={world / 'train.jsonl'}"]
    stage1 += [f"data.heldout={world / 'train.jsonl'}", "data.frames=8", "data.size=64"]
    stage1 += [f"models.tiny_root={shared / 'models'}", "optim.steps=1", "optim.batch_size=4", "optim.warmup_steps=1"]
    assert main(["stage1", "train", *stage1]) == 0
    args = overrides(world, shared, tmp_path / "run", **{"precompute.cache_dir": tmp_path / "cache"})
    assert main(["stage2", "precompute", *args, f"models.aligner={tmp_path / 'stage1'}"]) == 0
    shard = load_file(tmp_path / "cache" / "shard-000-00000.safetensors")
    saliency = shard["0/saliency"]
    assert saliency.shape == (64,) and 0 <= saliency.min() and saliency.max() <= 1
    with_aligner = [*args, f"models.aligner={tmp_path / 'stage1'}", "objective.align.saliency=aligner"]
    assert main(["stage2", "train", *with_aligner]) == 0


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_aligner_reads_the_teachers_vjepa_and_wans_umt5_not_second_copies(world, shared, tmp_path):
    """An aligner trained on the teacher's V-JEPA 2 and on Wan's own umT5 (``<wan>/text_encoder``,
    its tokenizer beside it) holds no copy of either in Stage 2's encoders, and its saliency is
    the one of the aligner loaded alone."""
    wan = wan_folder("tiny", shared / "models")
    stage1 = ["out_dir=" + str(tmp_path / "stage1"), f"data.train={world / 'train.jsonl'}"]
    stage1 += [f"data.heldout={world / 'train.jsonl'}", "data.frames=8", "data.size=64"]
    stage1 += [f"models.tiny_root={shared / 'models'}", f"models.caption_encoder={wan / 'text_encoder'}"]
    assert main(["stage1", "train", *stage1, "optim.steps=1", "optim.batch_size=4", "optim.warmup_steps=1"]) == 0
    args = overrides(world, shared, tmp_path / "run")
    config = load_config(Stage2Config, None, [*args, f"models.aligner={tmp_path / 'stage1'}"])
    encoders = Stage2Encoders(config, resolve_setup(config).view)
    assert encoders.saliency.video is encoders.teacher and encoders.saliency.captions.model is encoders.text_encoder
    without = Stage2Encoders(load_config(Stage2Config, None, args), resolve_setup(config).view)
    assert _count(encoders) == _count(without) + _count(encoders.saliency.aligner)  # parameters() gives each once

    alone = SaliencyModel.from_run(tmp_path / "stage1")
    assert alone.video is not encoders.teacher  # loaded alone: its own copies
    frames = torch.randint(0, 256, (1, 9, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    captions = ["a red circle moves from left to right"]
    (shared_saliency,) = [clip["saliency"] for clip in encoders(frames, captions)]
    own = alone(alone.tokens(encoders._vfm_input(frames)), captions).saliency_logits.float().sigmoid()[0]
    torch.testing.assert_close(shared_saliency, own, rtol=0, atol=1e-6)


def test_cache_is_refused_after_the_aligner_or_the_manifest_changes(world, shared, tmp_path, capsys):
    stage1 = ["out_dir=" + str(tmp_path / "stage1"), f"data.train={world / 'train.jsonl'}"]
    stage1 += [f"data.heldout={world / 'train.jsonl'}", "data.frames=8", "data.size=64"]
    stage1 += [f"models.tiny_root={shared / 'models'}", "optim.steps=1", "optim.batch_size=4", "optim.warmup_steps=1"]
    assert main(["stage1", "train", *stage1]) == 0
    args = overrides(world, shared, tmp_path / "run", **{"precompute.cache_dir": tmp_path / "cache"})
    args += [f"models.aligner={tmp_path / 'stage1'}", "objective.align.saliency=aligner"]
    assert main(["stage2", "precompute", *args]) == 0
    assert main(["stage1", "train", *stage1, "seed=1"]) == 0  # retrained in place: same folder, other weights
    assert main(["stage2", "train", *args]) == 2
    assert "cache made with other settings (aligner_weights)" in capsys.readouterr().err

    manifest = tmp_path / "train.jsonl"
    manifest.write_text((world / "train.jsonl").read_text().replace("videos/", str(world / "videos") + "/"))
    edited = overrides(world, shared, tmp_path / "run2", **{"precompute.cache_dir": tmp_path / "c2"})
    edited += [f"data.train={manifest}"]
    assert main(["stage2", "precompute", *edited]) == 0
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # a clip dropped from the manifest
    assert main(["stage2", "train", *edited]) == 2
    assert "cache made with other settings (manifest)" in capsys.readouterr().err


def test_caption_dropout_feeds_the_empty_caption_as_wan_encodes_it(world, shared, tmp_path):
    args = overrides(world, shared, tmp_path / "run", steps=2, **{"precompute.cache_dir": tmp_path / "cache"})
    assert main(["stage2", "precompute", *args]) == 0
    empty = load_file(tmp_path / "cache" / "empty_caption.safetensors")["text"]  # (l, D)
    pipe = WanPipeline.from_pretrained(wan_folder("tiny", shared / "models"))
    wan = pipe.encode_prompt([""], do_classifier_free_guidance=False, max_sequence_length=32)[0][0]  # (32, D)
    assert empty.shape == (1, wan.shape[-1]) and torch.allclose(wan[:1], empty) and wan[1:].abs().max() == 0

    text = torch.randn(64, 32, wan.shape[-1])
    batch = {"text": text, "empty_text": wan[None]}
    dropped = drop_captions(batch, 0.25, torch.Generator().manual_seed(0))["text"]
    gone = (dropped == wan).flatten(1).all(-1)  # (64,) rows that read the empty caption
    kept = (dropped == text).flatten(1).all(-1)
    assert (gone ^ kept).all() and 8 <= gone.sum() <= 24  # about a quarter, each row whole
    assert torch.equal(dropped, drop_captions(batch, 0.25, torch.Generator().manual_seed(0))["text"])
    assert torch.equal(drop_captions(batch, 1.0, torch.Generator())["text"], wan[None].expand(64, -1, -1))

    runs = {}
    for share in (0.0, 0.5):
        out = tmp_path / f"share-{share}"
        more = {"precompute.cache_dir": tmp_path / "cache", "data.caption_dropout": share}
        assert main(["stage2", "train", *overrides(world, shared, out, steps=4, **more)]) == 0
        runs[share] = [r["loss"] for r in json.loads((out / "history.json").read_text())]
    assert runs[0.0] != runs[0.5]


def test_two_expert_model_trains_only_the_chosen_expert(world, shared, tmp_path):
    more = {"models.wan": "tiny-a14b", "precompute.cache_dir": tmp_path / "cache", "objective.experts": "[low]"}
    args = overrides(world, shared, tmp_path / "run", steps=2, **more)
    assert main(["stage2", "precompute", *args]) == 0
    assert main(["stage2", "train", *args]) == 0
    original = WanPipeline.from_pretrained(wan_folder("tiny-a14b", shared / "models"))
    trained = WanPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert trained.config.boundary_ratio == 0.875
    high = [original.transformer.state_dict(), trained.transformer.state_dict()]
    low = [original.transformer_2.state_dict(), trained.transformer_2.state_dict()]
    assert all(torch.equal(high[0][k], high[1][k]) for k in high[0])  # the high-noise expert did not train
    assert not all(torch.equal(low[0][k], low[1][k]) for k in low[0])


def test_lora_trains_adapters_and_exports_merged_weights(world, shared, tmp_path):
    args = overrides(world, shared, tmp_path / "run", steps=3, **{"optim.lora_rank": 4, "optim.lr": 1e-2})
    assert main(["stage2", "precompute", *args]) == 0
    assert main(["stage2", "train", *args]) == 0
    saved = trainable_weights(latest_checkpoint(tmp_path / "run"))
    original = WanPipeline.from_pretrained(wan_folder("tiny", shared / "models")).transformer.state_dict()
    # the checkpoint holds what trains, adapters and projectors; the frozen base is the folder's
    assert all("lora_" in k or k.startswith("projectors.") for k in saved)
    assert any("lora_A" in k for k in saved) and any(k.startswith("projectors.") for k in saved)
    merged = WanPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    exported = merged.transformer.state_dict()
    assert exported.keys() == original.keys()  # plain Wan weights, LoRA merged in
    assert not torch.equal(exported["blocks.0.attn1.to_q.weight"], original["blocks.0.attn1.to_q.weight"])
    # the adapter file alone, loaded into the base pipeline, gives the merged transformer's output
    deviation = adapter_deviation(tmp_path / "run", wan_folder("tiny", shared / "models"))
    assert list(deviation) == ["transformer.safetensors"] and deviation["transformer.safetensors"] < 1e-4


def test_two_expert_lora_files_load_in_diffusers_and_in_comfyui_keys(world, shared, tmp_path):
    """A14B under LoRA (attention and feed-forward): high_noise / low_noise adapter files
    with the run's config in their headers; loaded into a fresh pipeline (the low-noise one
    with load_into_transformer_2) they give the merged export's outputs, and so do the
    ComfyUI-keyed files, which diffusers maps back to the same adapter."""
    more = {"models.wan": "tiny-a14b", "precompute.cache_dir": tmp_path / "cache", "optim.lora_rank": 4}
    more |= {"optim.lora_alpha": 8, "optim.lr": 1e-2, "export_comfyui": True}
    args = overrides(world, shared, tmp_path / "run", steps=4, **more)
    assert main(["stage2", "precompute", *args]) == 0
    assert main(["stage2", "train", *args]) == 0
    lora = tmp_path / "run" / "lora"
    assert sorted(p.name for p in lora.iterdir()) == [
        "high_noise.safetensors", "high_noise_comfyui.safetensors", "low_noise.safetensors", "low_noise_comfyui.safetensors",
    ]  # fmt: skip
    with safe_open(str(lora / "low_noise.safetensors"), "pt") as handle:
        header, keys = handle.metadata(), list(handle.keys())
    trained = json.loads(header["sara_config"])
    assert trained["optim"]["lora_rank"] == 4 and trained["models"]["wan"] == "tiny-a14b"
    assert any(".ffn.net.0.proj.lora_A" in k for k in keys) and any(".attn2.to_out.0.lora_B" in k for k in keys)

    merged = transformer_outputs(WanPipeline.from_pretrained(tmp_path / "run" / "pipeline"))
    base = wan_folder("tiny-a14b", shared / "models")
    assert not torch.allclose(merged[0], transformer_outputs(WanPipeline.from_pretrained(base))[0])
    deviation = adapter_deviation(tmp_path / "run", base)
    assert list(deviation) == [
        "high_noise.safetensors + low_noise.safetensors", "high_noise_comfyui.safetensors + low_noise_comfyui.safetensors",
    ]  # fmt: skip
    assert max(deviation.values()) < 1e-4 * merged[1].abs().max().item()

    comfy = load_file(lora / "low_noise_comfyui.safetensors")
    assert all(k.startswith("diffusion_model.blocks.") for k in comfy)
    assert comfy["diffusion_model.blocks.0.self_attn.q.alpha"].item() == 8.0
    plain = {k.removeprefix("transformer."): v for k, v in load_file(lora / "low_noise.safetensors").items()}
    back = {k.removeprefix("transformer."): v for k, v in WanPipeline.lora_state_dict(comfy).items()}
    assert back.keys() == plain.keys()
    for key in (k for k in plain if ".lora_A." in k):  # diffusers folds alpha / rank (8 / 4) into A and B
        up = key.replace(".lora_A.", ".lora_B.")
        torch.testing.assert_close(back[up] @ back[key], plain[up] @ plain[key] * 8 / 4)


def test_clips_of_two_shapes_train_in_same_shape_batches(world, shared, tmp_path):
    records = [json.loads(line) for line in (world / "train.jsonl").read_text().splitlines()]
    for record in records:
        record["video"] = str(world / record["video"])
        record.pop("entities")
    generator = torch.Generator().manual_seed(0)
    for number in range(4):  # wide clips beside the square ones
        frames = torch.randint(0, 255, (9, 3, 64, 96), generator=generator, dtype=torch.uint8)
        records.append({"video": str(write_video(tmp_path / f"wide{number}.mp4", frames, 8)), "caption": "noise"})
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("\n".join(map(json.dumps, records)) + "\n")
    more = {"data.train": manifest, "data.buckets": "[[64,64],[64,96]]", "precompute.cache_dir": tmp_path / "cache"}
    args = overrides(world, shared, tmp_path / "run", steps=6, **more, **{"objective.align.mode": "trd"})
    assert main(["stage2", "precompute", *args]) == 0
    shards = (tmp_path / "cache").glob("shard-*.safetensors")
    shapes = {tuple(v.shape) for shard in shards for k, v in load_file(shard).items() if k.endswith("/latents")}
    assert shapes == {(16, 3, 8, 8), (16, 3, 8, 12)}
    assert main(["stage2", "train", *args]) == 0  # every batch stacks: one shape per batch
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 6


def test_frame_buckets_give_each_clip_the_longest_length_it_holds(world, shared, tmp_path, capsys):
    """data.frame_buckets [5, 9] on 16-fps clips of 9 frames: clips cut to 0.375 s hold 6
    frames and train at 5, whole clips at 9; batches stack one length each."""
    records = [json.loads(line) for line in (world / "train.jsonl").read_text().splitlines()]
    for number, record in enumerate(records):
        record["video"] = str(world / record["video"])
        record.pop("entities")  # their masks span the whole clip
        if number % 2:
            record["end"] = 0.375
    manifest = tmp_path / "lengths.jsonl"
    manifest.write_text("\n".join(map(json.dumps, records)) + "\n")
    more = {
        "data.train": manifest,
        "data.frame_buckets": "[9,5]",
        "objective.align.mode": "trd",
        "precompute.cache_dir": tmp_path / "cache",
    }
    args = overrides(world, shared, tmp_path / "run", steps=4, **more)
    assert main(["stage2", "precompute", *args]) == 0
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    latents = {}
    for shard in (tmp_path / "cache").glob("shard-*.safetensors"):
        latents |= {int(k.split("/")[0]): v.shape[1] for k, v in load_file(shard).items() if k.endswith("/latents")}
    assert len(latents) == len(index["clips"]["records"]) == 6
    assert {clip: frames for clip, frames in latents.items()} == {
        i: 2 if i % 2 else 3 for i in range(6)
    }  # 5 or 9 frames
    assert main(["stage2", "train", *args]) == 0
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 4
    one_length = overrides(world, shared, tmp_path / "x", **{**more, "data.frame_buckets": "[]"})
    assert main(["stage2", "precompute", *one_length]) == 2
    assert "cache made with other settings (frame_buckets)" in capsys.readouterr().err


def test_trackers_get_every_figure_and_the_validation_videos(world, shared, tmp_path, monkeypatch):
    """wandb (offline) receives each training term, grad norm, lr, s/step, peak memory, the
    held-out losses and the validation videos at their steps, and a resumed run continues
    the same W&B run; TensorBoard gets the videos as frame strips; `none` writes neither."""
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = []
    original = wandb.Run.log

    def log(self, data, step=None, **kwargs):
        logged.append((step, data))
        return original(self, data, step=step, **kwargs)

    monkeypatch.setattr(wandb.Run, "log", log)
    more = {"validation.heldout": world / "train.jsonl", "validation.loss_every": 2, "validation.loss_clips": 2}
    more |= {"validation.every": 2, "validation.steps": 2, "logging.tracker": "wandb", "logging.mode": "offline"}
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x", **more)]) == 0
    run = tmp_path / "wandb"
    assert main(["stage2", "train", *overrides(world, shared, run, steps=2, **more)]) == 0
    assert main(["stage2", "train", *overrides(world, shared, run, steps=4, **more), "--resume", "latest"]) == 0
    keys = {step: set() for step in (1, 2, 3, 4)}
    for step, data in logged:
        keys[step] |= set(data)
    train = {f"train/{k}" for k in ("loss", "flow", "align", "grad_norm", "lr", "s_per_step", "peak_mib")}
    assert all(train <= keys[s] for s in keys)
    assert {"val/loss", "val/flow", "val/align", "val/videos"} <= keys[2] & keys[4] and "val/videos" not in keys[3]
    videos = next(data["val/videos"] for step, data in logged if "val/videos" in data)
    assert len(videos) == 2 and all(isinstance(v, wandb.Video) for v in videos)
    (only,) = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}  # one W&B run, resumed
    assert only == (run / "wandb_id").read_text().strip()

    tensorboard = tmp_path / "tb"
    more |= {"logging.tracker": "tensorboard"}
    assert main(["stage2", "train", *overrides(world, shared, tensorboard, steps=2, **more)]) == 0
    tags = EventAccumulator(str(tensorboard / "tensorboard")).Reload().Tags()
    assert {"val/videos/0", "val/videos/1"} <= set(tags["images"]) and "train/peak_mib" in tags["scalars"]
    silent = tmp_path / "none"
    assert main(["stage2", "train", *overrides(world, shared, silent, steps=1, **{"logging.tracker": "none"})]) == 0
    assert not (silent / "tensorboard").exists() and len(json.loads((silent / "history.json").read_text())) == 1


def test_gradient_accumulation_gives_the_whole_batch_step(world, shared, tmp_path, capsys):
    """Four clips a step as two micro-batches of two: the same losses and weights as one
    batch of four (with caption dropout, whose empty caption every micro-batch shares)."""
    runs = {}
    for accumulate in (1, 2):
        out = tmp_path / f"acc{accumulate}"
        more = {"optim.batch_size": 4 // accumulate, "optim.accumulate": accumulate, "optim.lr": 1e-2}
        more |= {"data.caption_dropout": 0.5}
        assert main(["stage2", "precompute", *overrides(world, shared, out, steps=3, **more)]) == 0
        assert main(["stage2", "train", *overrides(world, shared, out, steps=3, **more)]) == 0
        runs[accumulate] = (json.loads((out / "history.json").read_text()), trainable_weights(latest_checkpoint(out)))
    (one, weights_one), (two, weights_two) = runs[1], runs[2]
    for key in ("loss", "flow", "align", "grad_norm"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4)
    assert one[-1]["loss"] != one[0]["loss"]
    for key, value in weights_one.items():  # Adam's normalised updates magnify rounding in a few elements
        assert (weights_two[key] - value).norm() <= 1e-4 * value.norm(), key
    more = {"optim.batch_size": 4, "optim.accumulate": 2}  # a global batch of 8: more than the world's 6 clips
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "bad", **more)]) == 2
    assert "optim.batch_size: no shape bucket holds a global batch of 8 clips" in capsys.readouterr().err


def test_layerwise_fp8_stores_the_frozen_base_in_fp8_and_exports_it_unquantised(world, shared, tmp_path, capsys):
    """LoRA with optim.layerwise_fp8: the base's Linear weights live in fp8 while the
    adapters train in fp32; losses stay near the fp32 run's; the merged export is the
    folder's own base plus the adapter (not its fp8 copy)."""
    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.stage2.build import build_model, resolve_setup

    lora = {"optim.lora_rank": 4, "optim.lr": 1e-2}
    histories = {}
    for fp8 in (False, True):
        args = overrides(world, shared, tmp_path / f"fp8-{fp8}", steps=3, **lora, **{"optim.layerwise_fp8": fp8})
        assert main(["stage2", "precompute", *args]) == 0
        assert main(["stage2", "train", *args]) == 0
        histories[fp8] = [r["loss"] for r in json.loads((tmp_path / f"fp8-{fp8}" / "history.json").read_text())]
    assert histories[True] == pytest.approx(histories[False], rel=0.05) and histories[True] != histories[False]

    config = load_config(Stage2Config, None, args)
    model = build_model(config, resolve_setup(config))
    block = model.experts["high"].blocks[0]
    assert block.attn1.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert block.ffn.net[2].base_layer.weight.dtype == torch.float8_e4m3fn
    assert (
        block.attn1.to_q.lora_A["default"].weight.dtype == torch.float32 and block.norm2.weight.dtype == torch.float32
    )

    base = WanPipeline.from_pretrained(wan_folder("tiny", shared / "models")).transformer.state_dict()
    merged = WanPipeline.from_pretrained(tmp_path / "fp8-True" / "pipeline").transformer.state_dict()
    adapter = load_file(tmp_path / "fp8-True" / "lora" / "transformer.safetensors")
    down, up = (adapter[f"transformer.blocks.0.attn1.to_q.lora_{x}.weight"] for x in "AB")
    key = "blocks.0.attn1.to_q.weight"
    torch.testing.assert_close(merged[key], base[key] + up @ down, rtol=1e-5, atol=1e-6)

    no_lora = overrides(world, shared, tmp_path / "bad", **{"optim.layerwise_fp8": True})
    assert main(["stage2", "train", *no_lora]) == 2
    err = capsys.readouterr().err
    assert "optim.layerwise_fp8: stores the frozen base of a LoRA run; needs optim.lora_rank > 0 (is 0)" in err


def test_vae_slicing_is_exact_and_tiling_close_in_precompute_and_generation(world, shared, tmp_path, capsys):
    """Slicing encodes a batch's clips one at a time: the same latents (to rounding). Tiles of 32 px over
    64-px clips blend at their seams: close latents, a cache of its own, close videos."""
    latents = {}
    for name, more in {
        "plain": {},
        "sliced": {"precompute.vae_slicing": True},
        "tiled": {"precompute.vae_tile": 32},
    }.items():
        cache = tmp_path / f"cache-{name}"
        assert (
            main(
                [
                    "stage2",
                    "precompute",
                    *overrides(world, shared, tmp_path / "x", **{"precompute.cache_dir": cache}, **more),
                ]
            )
            == 0
        )
        latents[name] = load_file(cache / "shard-000-00000.safetensors")["0/latents"]
    torch.testing.assert_close(latents["sliced"], latents["plain"], rtol=1e-4, atol=1e-5)  # batch-size rounding only
    assert not torch.equal(latents["tiled"], latents["plain"])
    similarity = torch.nn.functional.cosine_similarity(latents["tiled"].flatten(), latents["plain"].flatten(), dim=0)
    assert similarity > 0.8  # the same picture; the tiny VAE's context is wide for 32-px tiles
    mixed = {"precompute.cache_dir": tmp_path / "cache-plain", "precompute.vae_tile": 32}
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x", **mixed)]) == 2
    assert "cache made with other settings (vae_tile)" in capsys.readouterr().err

    sft = {"objective.align.mode": "sft", "precompute.cache_dir": tmp_path / "cache-plain"}
    assert main(["stage2", "train", *overrides(world, shared, tmp_path / "run", steps=1, **sft)]) == 0
    videos = {}
    for tile in (0, 32):
        out = tmp_path / f"videos-{tile}"
        args = [
            "stage2",
            "generate",
            "--pipeline",
            str(tmp_path / "run" / "pipeline"),
            "--out",
            str(out),
            "--prompt",
            "a red circle",
        ]
        assert (
            main([*args, "--frames", "9", "--height", "64", "--width", "96", "--steps", "2", "--vae-tile", str(tile)])
            == 0
        )
        videos[tile] = decode_clip(out / "00-a-red-circle.mp4", None, None).frames.float()
    assert videos[32].shape == videos[0].shape == (9, 3, 64, 96)
    correlation = torch.corrcoef(torch.stack([videos[32].flatten(), videos[0].flatten()]))[0, 1]
    assert correlation > 0.5  # seams blend; the random-weight tiny VAE's picture stays


def test_validation_offloads_the_expert_that_does_not_train(world, shared, tmp_path):
    """A14B training its low-noise expert: with validation.offload_frozen the high-noise
    expert is group-offloaded (hooks on its blocks) and the validation videos are unchanged."""
    from diffusers.hooks import HookRegistry

    more = {"models.wan": "tiny-a14b", "precompute.cache_dir": tmp_path / "cache", "objective.experts": "[low]"}
    more |= {"validation.every": 1, "validation.steps": 2, "objective.align.mode": "sft"}
    assert main(["stage2", "precompute", *overrides(world, shared, tmp_path / "x", **more)]) == 0
    frames = {}
    for offload in (False, True):
        out = tmp_path / f"offload-{offload}"
        args = overrides(world, shared, out, steps=1, **more, **{"validation.offload_frozen": offload})
        assert main(["stage2", "train", *args]) == 0
        (video,) = sorted(RunDir(out).samples(1).glob("00-*.mp4"))
        frames[offload] = decode_clip(video, None, None).frames
    assert torch.equal(frames[True], frames[False])

    from sara.config import load_config
    from sara.config.stage2 import Stage2Config
    from sara.parallel.world import World
    from sara.stage2.build import build_model, resolve_setup
    from sara.stage2.validate import Validator

    config = load_config(Stage2Config, None, args)
    setup = resolve_setup(config)
    validator = Validator(config, setup, build_model(config, setup), World(0, 1, torch.device("cpu")))
    high = validator.pipe.transformer
    assert "group_offloading" in HookRegistry.check_if_exists_or_initialize(high.blocks[0]).hooks
    assert not HookRegistry.check_if_exists_or_initialize(validator.pipe.transformer_2.blocks[0]).hooks
