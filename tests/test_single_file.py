"""Wan DiTs from single-file checkpoints (ComfyUI keys, original keys) into a Diffusers folder."""

import pytest
import torch
from safetensors.torch import save_file

from sara.cli import main
from sara.models.presets import resolve
from sara.models.single_file import wan_from_single_file
from sara.models.wan import load_transformers, read_layout
from sara.models.wan_keys import original_state
from sara.models.weights import WeightsError


def single_file(model, path, prefix=""):
    """``model`` saved as a single file with the original names (ComfyUI: ``prefix``); diffusers'
    converter must map them back, so the test also checks ``original_state``."""
    state = original_state(model.state_dict(), prefix)
    assert len(state) == len(model.state_dict())
    save_file(state, path)
    return path


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: resolve("tiny", name, root) for name in ("wan", "wan-a14b", "wan-medium")}


def perturbed(folder, seed):
    """The folder's DiTs with other weights: a fine-tune the base does not hold."""
    experts = load_transformers(read_layout(folder))
    with torch.no_grad():
        for model in experts.values():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return experts


def test_a_two_expert_model_from_comfyui_and_original_files(presets, tmp_path):
    base = presets["wan-a14b"]
    tuned = perturbed(base, seed=3)
    high = single_file(tuned["high"], tmp_path / "high.safetensors", prefix="model.diffusion_model.")
    low = single_file(tuned["low"], tmp_path / "low.safetensors")  # original release: no prefix
    out = wan_from_single_file(base, tmp_path / "wan", [high, low], dtype=torch.float32)
    loaded = load_transformers(read_layout(out))
    for name in ("high", "low"):
        want, got = tuned[name].state_dict(), loaded[name].state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert (out / "vae").is_symlink() and (out / "text_encoder").is_symlink()
    assert not (out / "transformer").is_symlink() and read_layout(out).boundary == read_layout(base).boundary


def test_the_cli_writes_bfloat16_by_default(presets, tmp_path, capsys):
    base = presets["wan"]
    path = single_file(perturbed(base, seed=4)["high"], tmp_path / "dit.safetensors", "model.diffusion_model.")
    assert main(["models", "from-single-file", str(path), "--base", str(base), "--out", str(tmp_path / "w")]) in (
        0,
        None,
    )
    assert "1 DiT(s)" in capsys.readouterr().out
    model = load_transformers(read_layout(tmp_path / "w"))["high"]
    assert model.dtype == torch.float32  # sara loads fp32; what was stored is bf16
    assert torch.equal(model.proj_out.weight, perturbed(base, seed=4)["high"].proj_out.weight.bfloat16().float())


def test_wrong_inputs_are_refused_in_one_line(presets, tmp_path):
    tiny, a14b, medium = presets["wan"], presets["wan-a14b"], presets["wan-medium"]
    other = single_file(load_transformers(read_layout(medium))["high"], tmp_path / "medium.safetensors")
    with pytest.raises(WeightsError, match=r"medium.safetensors: not a Wan DiT checkpoint of .*transformer's shape"):
        wan_from_single_file(tiny, tmp_path / "a", [other])
    with pytest.raises(
        WeightsError, match=r"has 2 DiT\(s\) \(transformer and transformer_2\); give one checkpoint for each"
    ):
        wan_from_single_file(a14b, tmp_path / "b", [other])
    with pytest.raises(WeightsError, match=r"gone.safetensors: checkpoint not found"):
        wan_from_single_file(tiny, tmp_path / "c", [tmp_path / "gone.safetensors"])
    with pytest.raises(WeightsError, match=r"not a Diffusers Wan folder"):
        wan_from_single_file(tmp_path, tmp_path / "d", [other])
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()
