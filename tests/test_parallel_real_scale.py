"""What a GPU run computes, proven on CPU: bf16 sharded steps against one bf16-autocast
process, parity at the real head counts and token grids, and the real width end to end."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import WanTransformer3DModel
from distributed import spawn
from parity import VIEW, compare, make_batch, one_step, real_heads_folder, sharded_step

from sara.config.stage2 import Stage2ObjectiveConfig
from sara.models.presets import RELEASED_ROOT, resolve
from sara.models.wan import dit_grid, latent_shape, read_layout
from sara.stage2.objective import Stage2Model

pytestmark = pytest.mark.slow
LATENT = (3, 8, 8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve("tiny", "wan", tmp_path_factory.mktemp("models"))


BF16 = {
    "sara, fsdp": (2, {}, "sara"),
    "sara, fsdp x ulysses": (4, {"ulysses": 2}, "sara"),
    "moalign, fsdp x ulysses": (4, {"ulysses": 2}, "moalign"),
}


@pytest.mark.parametrize("size, parallel, mode", BF16.values(), ids=BF16.keys())
def test_bf16_sharded_step_computes_what_one_bf16_process_computes(tiny, size, parallel, mode):
    """FSDP gathering in bf16 against one process under bf16 autocast with fp32 masters: the
    timesteps reach the condition embedder in fp32, equal; loss and gradients agree to
    bf16's resolution. FSDP's default (inputs cast to bf16) rounds σ·1000 to steps of 4 above
    512 and is caught by the same checks."""
    (reference,) = spawn(one_step, 1, tiny, mode, LATENT, "bfloat16")
    results = spawn(sharded_step, size, tiny, mode, parallel, LATENT, "bfloat16")
    for result in results:
        (seen,) = result["timesteps"]
        assert seen.dtype == torch.float32
        assert torch.equal(seen, reference["timesteps"][0][result["rows"]])
    found = compare(reference, results)
    # the same bf16 products: the terms agree to fp32 rounding; gradients, summed over other
    # splits of the tokens in bf16 before the fp32 reduction, to a few bf16 steps (2⁻⁸)
    # (measured: 6.8e-3 with FSDP, 1.9e-2 with FSDP × Ulysses; 1.6 with inputs cast)
    assert max(found["terms"].values()) < 1e-5, found["terms"]
    assert found["grad"] < 5e-2, (found["worst"], found["grad"])

    if parallel:
        return  # the control below, once: FSDP's default policy on the plain FSDP world
    cast = spawn(sharded_step, size, tiny, "sara", parallel, LATENT, "bfloat16", False, False, True)
    (seen,) = cast[0]["timesteps"]
    assert seen.dtype == torch.bfloat16 and not torch.equal(seen.float(), reference["timesteps"][0][cast[0]["rows"]])
    wrong = compare(reference, cast)
    assert wrong["terms"]["flow"] > 1e-4 and wrong["grad"] > 0.5  # the time embedder's gradients: far off


# the real head counts and a real bucket's aspect under the real VAE and patch, scaled down:
# TI2V-5B 704 × 1280 → 352 × 640 (5 frames: 2 × 11 × 20 DiT tokens), A14B 480 × 832 → 240 × 416
# (13 frames: 4 × 15 × 26); Ulysses degrees that divide both the heads and the tokens
REAL = {
    "ti2v heads 24, ulysses 2": ("wan2.2-ti2v-5b", 24, (5, 352, 640), 4, {"ulysses": 2}),
    "ti2v heads 24, ulysses 8": ("wan2.2-ti2v-5b", 24, (5, 352, 640), 8, {"ulysses": 8}),
    "a14b heads 40, ulysses 4": ("wan2.2-t2v-a14b", 40, (13, 240, 416), 4, {"ulysses": 4}),
    "a14b heads 40, ulysses 8": ("wan2.2-t2v-a14b", 40, (13, 240, 416), 8, {"ulysses": 8}),
}


@pytest.mark.parametrize("case", REAL)
def test_parity_at_real_head_counts_and_token_grids(case, tmp_path):
    release, heads, (frames, height, width), size, parallel = REAL[case]
    folder = real_heads_folder(tmp_path / "wan", release, heads)
    layout = read_layout(folder)
    latent = latent_shape(frames, height, width, layout.vae_temporal, layout.vae_spatial)
    tokens = math.prod(dit_grid(layout.patch, latent))
    assert tokens % parallel["ulysses"] == 0 and heads % parallel["ulysses"] == 0
    (reference,) = spawn(one_step, 1, folder, "sara", latent)
    found = compare(reference, spawn(sharded_step, size, folder, "sara", parallel, latent))
    assert max(found["terms"].values()) < 1e-5, found["terms"]
    assert found["grad"] < 1e-4, (found["worst"], found["grad"])


@pytest.mark.parametrize(
    "release, vfm_dim", [("wan2.2-ti2v-5b", 1024), ("wan2.2-t2v-a14b", 1408)], ids=["ti2v-5b", "a14b"]
)
def test_one_block_of_the_real_width_steps_end_to_end(release, vfm_dim):
    """The released DiT's config with one block (TI2V 3072 wide, ffn 14336; A14B 5120, ffn 13824)
    under the objective, to the width of V-JEPA 2 ViT-L or ViT-g: one forward and backward
    on a 4:7 clip of 5 frames, every trained parameter given a finite gradient."""
    layout = read_layout(RELEASED_ROOT / release)
    config = WanTransformer3DModel.load_config(RELEASED_ROOT / release, subfolder="transformer")
    torch.manual_seed(0)
    dit = WanTransformer3DModel.from_config({**config, "num_layers": 1})
    objective = Stage2ObjectiveConfig()
    objective.align.block = 0
    model = Stage2Model({"high": dit}, layout, objective, vfm_dim, VIEW)
    side = layout.pixel_multiple[0]  # pixels per DiT token side
    latent = latent_shape(5, 4 * side, 7 * side, layout.vae_temporal, layout.vae_spatial)
    batch = {k: v[:1] for k, v in make_batch(model, latent).items()}
    batch["vfm"] = torch.randn(1, batch["vfm"].shape[1], vfm_dim)  # V-JEPA 2's real width
    loss, terms = model(batch)
    loss.backward()
    width = config["num_attention_heads"] * config["attention_head_dim"]
    assert (
        model.projectors["high"].net[0].in_features == width
        and model.projectors["high"].net[-1].out_features == vfm_dim
    )
    assert all(torch.isfinite(t) for t in terms.values()) and terms["align"] > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
