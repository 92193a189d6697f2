"""Dtypes of a GPU run, checked on CPU (bf16 works there too): frozen weights read in the compute
dtype, diffusers' fp32 modules kept, fp32 masters only for what trains, validation's frozen
parts in the compute dtype, exports in the release's dtype."""

import shutil

import pytest
import torch
from diffusers import WanTransformer3DModel

from sara.cli import main
from sara.config import load_config
from sara.config.stage2 import Stage2Config
from sara.models.presets import resolve
from sara.models.wan import keeps_fp32, stored_dtypes
from sara.parallel.world import World
from sara.shapes.render import SynthSpec, synthesize
from sara.stage2.build import build_model, resolve_setup
from sara.stage2.validate import Validator

BF16 = torch.bfloat16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny Wan preset, and a copy of it released as Wan2.2 is: its DiT stored in bf16
    (diffusers' fp32 modules in fp32)."""
    root = tmp_path_factory.mktemp("models")
    tiny = resolve("tiny", "wan", root)
    released = root / "wan-bf16"
    shutil.copytree(tiny, released)
    shutil.rmtree(released / "transformer")
    WanTransformer3DModel.from_pretrained(tiny, subfolder="transformer", dtype=BF16).save_pretrained(
        released / "transformer"
    )
    return {"tiny": tiny, "bf16": released, "root": root}


def config_for(folders, wan: str, *more: str) -> Stage2Config:
    return load_config(Stage2Config, None, [f"models.wan={folders[wan]}", f"models.tiny_root={folders['root']}", *more])


def dtypes(model) -> dict[str, torch.dtype]:
    return {name: p.dtype for name, p in model.named_parameters()}


def test_a_lora_runs_frozen_base_is_read_in_bf16_but_for_diffusers_fp32_modules(folders):
    config = config_for(folders, "tiny", "optim.lora_rank=4")
    model = build_model(config, resolve_setup(config), compute_dtype=BF16)
    dit = model.experts["high"]
    kept = [n for n, p in model.named_parameters() if not p.requires_grad and keeps_fp32(dit, n)]
    assert any("time_embedder" in n for n in kept) and any("scale_shift_table" in n for n in kept)
    assert any(n.endswith("norm2.weight") for n in kept)
    for name, parameter in model.named_parameters():
        expected = torch.float32 if parameter.requires_grad or name in kept else BF16
        assert parameter.dtype == expected, name
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"experts", "projectors"}
    assert all("lora_" in n for n, p in dit.named_parameters() if p.requires_grad)


def test_a_full_fine_tune_keeps_fp32_masters_and_rank_0_the_released_bf16(folders):
    config = config_for(folders, "bf16")
    setup = resolve_setup(config)
    masters = build_model(config, setup, compute_dtype=BF16)
    assert set(dtypes(masters).values()) == {torch.float32}
    source = build_model(config, setup, compute_dtype=BF16, masters=False)  # what rank 0 broadcasts from
    released = stored_dtypes(folders["bf16"], "transformer")
    assert set(released.values()) == {BF16, torch.float32}
    for name, dtype in dtypes(source.experts["high"]).items():
        assert dtype == released[name], name  # as the folder stores it: no fp32 copy of the bf16 weights
    assert set(dtypes(source.projectors).values()) == {torch.float32}  # created here: fp32 from the start
    for name, parameter in source.experts["high"].named_parameters():  # exactly what an fp32 master holds
        torch.testing.assert_close(parameter.float(), masters.experts["high"].get_parameter(name), rtol=0, atol=0)


def test_validation_loads_the_frozen_expert_in_the_compute_dtype(folders, tmp_path):
    a14b = resolve("tiny", "wan-a14b", folders["root"])
    more = ["objective.experts=[low]", "parallel.param_dtype=bfloat16", "validation.prompts=[a red circle moves left]"]
    more += ["data.size=32", "data.frames=5", "validation.steps=2", f"models.tiny_root={folders['root']}"]
    for offload in (False, True):
        config = load_config(Stage2Config, None, [f"models.wan={a14b}", f"validation.offload_frozen={offload}", *more])
        setup = resolve_setup(config)
        model = build_model(config, setup, compute_dtype=BF16)
        validator = Validator(config, setup, model, World(rank=0, size=1, device=torch.device("cpu")))
        pipe = validator.pipe
        assert pipe.transformer_2 is model.experts["low"] and set(dtypes(pipe.transformer_2).values()) == {
            torch.float32
        }
        frozen = pipe.transformer  # the high-noise expert, which does not train
        for name, dtype in dtypes(frozen).items():
            assert dtype == (torch.float32 if keeps_fp32(frozen, name) else BF16), name
        assert set(dtypes(pipe.text_encoder).values()) == {BF16} and set(dtypes(pipe.vae).values()) == {torch.float32}
        (video,) = validator(tmp_path / f"offload-{offload}")  # sampled under bf16 autocast, decoded in fp32
        assert video.is_file()


@pytest.mark.slow
def test_a_full_fine_tune_exports_in_the_released_dtype_unless_asked(folders, tmp_path):
    synthesize(SynthSpec(num=2, seed=1, frames=9, size=64, heldout_fraction=0.0), tmp_path / "world", progress=False)
    base = [f"data.train={tmp_path / 'world' / 'train.jsonl'}", "data.frames=9", "data.size=64"]
    base += [f"models.wan={folders['bf16']}", f"models.tiny_root={folders['root']}", "models.text_length=32"]
    base += [f"precompute.cache_dir={tmp_path / 'cache'}", "objective.align.saliency=masks", "optim.steps=1"]
    base += ["optim.batch_size=2", "optim.lr=1e-2"]
    assert main(["stage2", "precompute", *base, f"out_dir={tmp_path / 'p'}"]) == 0
    released = stored_dtypes(folders["bf16"], "transformer")
    for export, expected in (("released", released), ("float32", dict.fromkeys(released, torch.float32))):
        out = tmp_path / export
        assert main(["stage2", "train", *base, f"out_dir={out}", f"export_dtype={export}"]) == 0
        assert stored_dtypes(out / "pipeline", "transformer") == expected
    trained = WanTransformer3DModel.from_pretrained(tmp_path / "float32" / "pipeline", subfolder="transformer")
    start = WanTransformer3DModel.from_pretrained(folders["bf16"], subfolder="transformer")
    assert not torch.equal(trained.proj_out.weight, start.proj_out.weight)  # it trained, then was written
