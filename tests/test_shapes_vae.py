"""The shapes VAE: its frame-wise start, its unclamped training decode, the exact faster
layers it trains with, the entity outlines its loss weights, that training lowers the
reconstruction error, and the folder and gate the preset writes."""

import json

import pytest
import torch
from diffusers import AutoencoderKLWan, WanPipeline

from sara.demo.stage2 import vae_part
from sara.models.presets import WAN_VARIANTS
from sara.models.vae_layers import fast_layers
from sara.models.wan import save_tiny_wan
from sara.shapes.metric import METRICS
from sara.shapes.render import SynthSpec, render_clip
from sara.shapes.text import TextRecipe
from sara.shapes.vae import (
    VaeRecipe,
    decode_unclamped,
    save_shapes_wan,
    seen_clips,
    shapes_vae,
    train_vae,
)

SMALL = VaeRecipe(clips=6, image_steps=40, image_batch=4, clip_steps=4, clip_batch=1, gate_clips=2, base_dim=8)


def _vae(frame_wise: bool) -> AutoencoderKLWan:
    vae = shapes_vae(8)
    if not frame_wise:  # the class's own initialisation: every tap of every convolution random
        vae = AutoencoderKLWan.from_config(vae.config)
    return vae.eval()


@pytest.mark.parametrize("frame_wise", [True, False])
def test_frame_wise_start_decodes_each_latent_frame_alone(frame_wise):
    # the four frames decoded from the second latent frame: copies of one another only when
    # the temporal taps start at zero and the up-resamplers copy frames
    latents = torch.randn(1, 16, 3, 6, 10)  # non-square, 3 latent frames -> 9 frames
    with torch.no_grad():
        frames = decode_unclamped(_vae(frame_wise), latents)[0]  # (3, 9, 48, 80)
    assert frames.shape == (3, 9, 48, 80)
    same = all(torch.allclose(frames[:, 1], frames[:, t], atol=1e-5) for t in (2, 3, 4))
    assert same == frame_wise


def test_frame_wise_start_encodes_a_still_clip_like_its_frame():
    # a still clip's later latent frames are equal: each chunk of 4 frames is read frame-wise
    vae = _vae(True)
    still = torch.rand(1, 3, 1, 40, 56).repeat(1, 1, 9, 1, 1) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(still).latent_dist.mode()  # (1, 16, 3, 5, 7)
    assert latents.shape == (1, 16, 3, 5, 7)
    torch.testing.assert_close(latents[:, :, 1], latents[:, :, 2])


def test_unclamped_decode_is_decode_before_its_clamp():
    vae = _vae(True)
    latents = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(20)  # a share of the pixels overshoots [-1, 1]
        raw = decode_unclamped(vae, latents)
        clamped = vae.decode(latents).sample
    assert raw.abs().max() > 1
    torch.testing.assert_close(raw.clamp(-1, 1), clamped)


@pytest.mark.parametrize("frames", [1, 5])
def test_fast_layers_give_the_diffusers_outputs_and_gradients(frames):
    # every tap perturbed, past ones included: on one frame they must still play no part
    vae = shapes_vae(8)
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    clip = torch.rand(2, 3, frames, 40, 56) * 2 - 1  # non-square

    def run():
        vae.zero_grad()
        out = decode_unclamped(vae, vae.encode(clip).latent_dist.mode())  # (2, 3, T, 40, 56)
        out.square().mean().backward()
        return out, {name: p.grad.clone() for name, p in vae.named_parameters() if p.grad is not None}

    reference, grads = run()
    with fast_layers(vae):
        fast, fast_grads = run()
    assert fast.shape == reference.shape == (2, 3, frames, 40, 56)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
    assert fast_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    # on exit the Diffusers forwards are back
    assert all("forward" not in vars(m) for m in vae.modules())


def test_fast_layers_refuse_half_precision():
    with pytest.raises(ValueError, match="float32 only"):
        with fast_layers(shapes_vae(8).to(torch.bfloat16)):
            pass


def test_outlines_are_the_edges_of_the_entity_masks():
    recipe = VaeRecipe(length=5, size=96)
    videos, outlines = seen_clips(recipe, seed=1, count=2)
    assert videos.shape == (2, 5, 96, 96, 3) and outlines.shape == (2, 5, 96, 96)
    spec = SynthSpec(frames=5, size=96, seed=1, pairs="seen")
    masks = torch.from_numpy(render_clip(spec, 0).masks[0])  # (T, H, W) the first entity
    inner = masks.clone()
    inner[:, 1:-1, 1:-1] &= masks[:, :-2, 1:-1] & masks[:, 2:, 1:-1] & masks[:, 1:-1, :-2] & masks[:, 1:-1, 2:]
    edge = masks & ~inner  # the entity's own boundary pixels
    assert edge.any() and outlines[0][edge].all()
    assert (masks & ~outlines[0]).any()  # its inside is not outline
    assert outlines.float().mean() < 0.2  # a thin band, not the shapes


def test_training_on_single_frames_keeps_the_vae_frame_wise():
    # the shipped recipe (no clip phase): the past taps never see a gradient, so the trained
    # VAE still decodes each later latent frame to four copies of one frame
    recipe = VaeRecipe(clips=2, image_steps=3, image_batch=2, base_dim=8)
    assert recipe.clip_steps == 0
    vae = shapes_vae(recipe.base_dim)
    assert len(train_vae(vae, recipe, seed=0, progress=False)) == recipe.image_steps
    with torch.no_grad():
        frames = decode_unclamped(vae, torch.randn(1, 16, 2, 4, 6))[0]  # (3, 5, 32, 48)
    assert all(torch.equal(frames[:, 1], frames[:, t]) for t in (2, 3, 4))
    assert not torch.equal(frames[:, 0], frames[:, 1])


@pytest.mark.slow
def test_training_lowers_the_reconstruction_error():
    recipe = VaeRecipe(clips=2, image_steps=60, image_batch=8, clip_steps=4, clip_batch=1, base_dim=8)
    spec = SynthSpec(frames=recipe.length, size=recipe.size, seed=3, pairs="seen")  # the clips it trains on
    frames = torch.stack([torch.from_numpy(render_clip(spec, i).video[:5, 32:96, 16:112]) for i in range(2)])
    clips = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (2, 3, 5, 64, 96)

    def error(vae):
        with torch.no_grad():
            return (vae.decode(vae.encode(clips).latent_dist.mode()).sample - clips).abs().mean().item()

    vae = shapes_vae(recipe.base_dim)
    before = error(vae)
    losses = train_vae(vae, recipe, seed=3, progress=False)
    assert len(losses) == recipe.image_steps + recipe.clip_steps
    assert error(vae) < 0.8 * before


@pytest.mark.slow
def test_preset_folder_loads_with_statistics_and_gate(tmp_path):
    assert WAN_VARIANTS["shapes"] == "wan-shapes"
    random_states = WanPipeline.from_pretrained(save_tiny_wan(tmp_path / "tiny", variant="medium")).text_encoder
    text = TextRecipe(captions=40, steps=3, batch=4, probes=2)
    folder = save_shapes_wan(tmp_path / "wan", seed=0, recipe=SMALL, text=text)
    pipe = WanPipeline.from_pretrained(folder)
    assert pipe.vae.config.is_residual and pipe.vae_scale_factor_spatial == 8 and pipe.vae_scale_factor_temporal == 4
    assert pipe.vae.config.latents_std != [1.0] * 16  # measured on training clips, not the defaults
    assert all(s > 0 for s in pipe.vae.config.latents_std)
    gate = json.loads((folder / "vae" / "gate.json").read_text())
    assert gate["recipe"]["image_steps"] == SMALL.image_steps
    for row in ("ground truth", "reconstruction"):
        assert set(gate["gate"][row]) == set(METRICS)
    assert gate["gate"]["ground truth"]["presence"]["mean"] == 1.0  # the rendered clips show every entity
    text_gate = json.loads((folder / "text_encoder" / "gate.json").read_text())
    assert text_gate["recipe"]["steps"] == 3 and set(text_gate["binding gap"]) == {"random", "pretrained"}
    trained = dict(pipe.text_encoder.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in random_states.named_parameters())
    section = vae_part(folder)  # the demo's paragraph and table
    assert "40 steps on single frames, then 4 on 5-frame clips" in section and section.count("<tr>") == 3
    assert "3 steps of masked-token prediction" in section
    gate["recipe"]["clip_steps"] = 0  # the shipped recipe: no clip phase
    (folder / "vae" / "gate.json").write_text(json.dumps(gate))
    assert "frame-wise" in vae_part(folder) and "-frame clips" not in vae_part(folder)
