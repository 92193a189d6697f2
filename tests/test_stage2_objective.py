"""The Stage 2 objective on tiny Wan presets: block capture, projector, resampling, modes, experts."""

import re
from pathlib import Path

import pytest
import torch
from references import unshift_sigma

from sara.config.stage2 import Stage2ObjectiveConfig
from sara.losses.alignment import ALIGN_MODES, ROUTINGS
from sara.losses.flow import noisy_latents, shift_sigma
from sara.models.motion import MotionHead
from sara.models.presets import resolve
from sara.models.wan import load_transformers, read_layout
from sara.stage2.align import VfmView, capture_output, resample_to_vjepa
from sara.stage2.objective import Stage2Model

VFM_DIM, VIEW = 24, VfmView(tubelet=2, patch=16)
VFM_GRID = (4, 4, 4)  # V-JEPA 2 on video frames 1…8 of 64²


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: read_layout(resolve("tiny", name, root)) for name in ("wan", "wan-a14b", "wan-ti2v")}


def make_batch(batch=2, seed=0, channels=16, side=8):
    g = torch.Generator().manual_seed(seed)
    # 9 video frames of 64² → 3 latent frames of 8² → DiT grid (3, 4, 4) (TI2V's 16× VAE: 4², (3, 2, 2))
    return {
        "latents": torch.randn(batch, channels, 3, side, side, generator=g),
        "text": torch.randn(batch, 12, 64, generator=g),
        "vfm": torch.randn(batch, 64, VFM_DIM, generator=g),
        "saliency": (torch.rand(batch, 64, generator=g) > 0.5).float(),
    }


def build(layout, mode="sara", seed=0, **align):
    config = Stage2ObjectiveConfig()
    config.align.mode = mode
    for key, value in align.items():
        setattr(config.align, key, value)
    torch.manual_seed(seed)
    experts = load_transformers(layout)
    motion = MotionHead(VFM_DIM, dim=8, hidden=16) if mode == "moalign" else None
    return Stage2Model(experts, layout, config, VFM_DIM, VIEW, motion)


def with_noise(model, batch, seed=1):
    return batch | model.draw(batch["latents"].shape, torch.Generator().manual_seed(seed))


def test_flow_matching_interpolates_data_and_noise():
    x0, noise = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 3, 1, 2, 2)
    xt, target = noisy_latents(x0, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], noise[1]) and torch.equal(target, noise - x0)
    u = torch.linspace(0, 1, 11)
    assert torch.allclose(unshift_sigma(shift_sigma(u, 3.0), 3.0), u, atol=1e-6)
    assert (shift_sigma(u, 3.0) >= u).all()  # shift > 1 spends more steps at high noise


def test_tubelets_fall_inside_one_latent_frame():
    # video frames 1..8 → tubelets (1,2) (3,4) (5,6) (7,8); latent frames 1 = 1..4, 2 = 5..8
    assert VfmView(2, 16).latent_frame_of(4).tolist() == [1, 1, 2, 2]
    assert VfmView(4, 16).latent_frame_of(2).tolist() == [1, 2]
    assert VfmView(2, 16, stride=2).latent_frame_of(2).tolist() == [1, 2]  # frames (1, 3) and (5, 7)
    with pytest.raises(ValueError, match="straddles"):
        VfmView(3, 16).latent_frame_of(2)  # frames (4, 5, 6) span latent frames 1 and 2


def test_resampling_keeps_values_on_the_tokens_they_cover():
    # value = latent frame index; DiT grid (3, 4, 4) onto V-JEPA (4, 2, 2): area-averaged 2×2 cells
    frames = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(1, 3, 4, 4, 1).reshape(1, 48, 1)
    out = resample_to_vjepa(frames, (3, 4, 4), (4, 2, 2), VIEW).view(4, 2, 2)
    assert out[:, 0, 0].tolist() == [1.0, 1.0, 2.0, 2.0]
    columns = torch.arange(4.0).view(1, 1, 1, 4, 1).expand(1, 3, 4, 4, 1).reshape(1, 48, 1)
    assert resample_to_vjepa(columns, (3, 4, 4), (4, 2, 2), VIEW).view(4, 2, 2)[0, 0].tolist() == [0.5, 2.5]
    up = resample_to_vjepa(columns, (3, 4, 4), (4, 8, 8), VIEW)  # a coarser DiT grid is upsampled
    assert up.shape == (1, 256, 1)
    with pytest.raises(ValueError, match="grid mismatch"):
        resample_to_vjepa(frames, (3, 4, 4), (3, 2, 2), VIEW)


def test_the_vjepa_grid_follows_the_latents(tiny):
    assert build(tiny["wan"]).vfm_grid((3, 8, 8)) == VFM_GRID  # 8× VAE: 64² pixels
    assert build(tiny["wan-ti2v"]).vfm_grid((3, 4, 4)) == VFM_GRID  # 16× VAE: the same 64² pixels
    assert build(tiny["wan"]).vfm_grid((5, 8, 12)) == (8, 4, 6)  # 17 frames of 64 × 96
    half = Stage2Model({}, tiny["wan"], Stage2ObjectiveConfig(), VFM_DIM, VfmView(2, 16, stride=2, short_side=32))
    assert half.vfm_grid((5, 8, 12)) == (4, 2, 3)  # frames 1, 3, …, 15 at 32 × 48


def test_capture_leaves_the_dit_output_bit_identical_and_no_hook_behind(tiny):
    dit = load_transformers(tiny["wan"])["high"].eval()
    batch = make_batch()
    args = dict(timestep=torch.tensor([500.0, 20.0]), encoder_hidden_states=batch["text"], return_dict=False)
    plain = dit(batch["latents"], **args)[0]
    with capture_output(dit.blocks[1]) as outputs:
        captured = dit(batch["latents"], **args)[0]
    assert torch.equal(plain, captured) and len(outputs) == 1 and outputs[0].shape == (2, 48, 64)
    assert not dit.blocks[1]._forward_hooks
    dit(batch["latents"], **args)  # a later call (sampling) adds nothing to a finished capture
    assert len(outputs) == 1


@pytest.mark.parametrize("mode", ["sft", "repa", "trd", "sara", "moalign"])
def test_each_mode_learns_a_fixed_batch(tiny, mode):
    model = build(tiny["wan"], mode)
    batch = with_noise(model, make_batch())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses, aligns = [], []
    for _ in range(30):
        loss, terms = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        aligns.append(terms["align"].item())
    assert losses[-1] < 0.8 * losses[0]
    if mode == "sft":
        assert aligns == [0.0] * 30 and not list(model.projectors.parameters())
    else:
        assert aligns[-1] < aligns[0]
    if mode == "moalign":  # the frozen head is the target: it does not move, the projector maps to its width
        assert not any(p.requires_grad for p in model.motion.parameters())
        assert model.projectors["high"].net[-1].out_features == 8


def test_moalign_needs_its_motion_head(tiny):
    config = Stage2ObjectiveConfig()
    config.align.mode = "moalign"
    with pytest.raises(ValueError, match="needs the teacher's motion head"):
        Stage2Model(load_transformers(tiny["wan"]), tiny["wan"], config, VFM_DIM, VIEW)


def test_or_routing_sends_no_gradient_through_background_pairs(tiny):
    model = build(tiny["wan"], "sara", routing="or", weight=1.0)
    batch = with_noise(model, make_batch(batch=1))
    batch["saliency"] = torch.zeros(1, 64)
    batch["saliency"][0, :8] = 1.0  # 8 subject tokens: 8·8 + 2·8·56 pairs touch them, 56² do not
    kept = {}
    handle = model.projectors["high"].register_forward_hook(lambda module, args, out: kept.setdefault("proj", out))
    loss, _ = model(batch)
    handle.remove()
    (grad,) = torch.autograd.grad(loss, kept["proj"])  # the flow term does not read the projector

    def reference(include_background_pairs):
        tokens = torch.nn.functional.normalize(resample_to_vjepa(kept["proj"], (3, 4, 4), VFM_GRID, VIEW), dim=-1)
        target = torch.nn.functional.normalize(batch["vfm"], dim=-1)
        pairs = (tokens @ tokens.mT - target @ target.mT).abs().sub(0.1).relu()[0]  # (N, N) l_ij
        fg = batch["saliency"][0].bool()
        weights = (fg[:, None] | fg[None, :]).float()
        if include_background_pairs:
            weights = torch.ones_like(weights)
        return torch.autograd.grad((weights * pairs).sum() / weights.sum(), kept["proj"], retain_graph=True)[0]

    assert torch.allclose(grad, reference(False), atol=1e-6)
    assert not torch.allclose(grad, reference(True), atol=1e-4)  # background pairs would have moved it


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny):
    """Recompute in backward runs the aligned block again: it must find no hook (the capture
    belongs to the forward) and leave nothing behind, step after step."""
    batch = with_noise(build(tiny["wan"]), make_batch())
    results = []
    for checkpointing in (False, True):
        model = build(tiny["wan"], "sara")
        block = model.experts["high"].blocks[model.config.align.block]
        if checkpointing:
            model.experts["high"].enable_gradient_checkpointing()
        runs = []
        for _ in range(2):  # a second step sees no state of the first
            model.zero_grad()
            loss, terms = model(batch)
            loss.backward()
            assert not block._forward_hooks
            runs.append((loss.detach(), terms["align"], [p.grad.clone() for p in model.parameters()]))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
        results.append(runs[0])
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[0][2], results[1][2]))


def test_two_experts_each_take_the_timesteps_they_own(tiny):
    layout = tiny["wan-a14b"]
    assert layout.experts == ("high", "low") and layout.boundary == 875.0
    assert layout.expert_of(torch.tensor([999.0, 875.0, 874.9, 10.0])).tolist() == [0, 0, 1, 1]
    model = build(layout, "sara")
    calls = []
    for name, dit in model.experts.items():
        dit.register_forward_hook(lambda module, args, out, name=name: calls.append((name, len(args[0]))))
    batch = make_batch(batch=3) | {
        "noise": torch.randn(3, 16, 3, 8, 8),
        "sigma": torch.tensor([0.95, 0.5, 0.1]),
        "expert": torch.tensor([0, 1, 1]),
    }
    model(batch)
    assert calls == [("high", 1), ("low", 2)]


def test_one_trained_expert_owns_sigma_rounded_across_the_boundary(tiny):
    """The high expert alone draws σ from [0.875, 1]; the bottom of that range, shifted back
    and forth, rounds to 0.87499994 (t < 875, the low expert's by timestep): the drawn
    expert, not the timestep, decides."""
    layout = tiny["wan-a14b"]
    edge = shift_sigma(unshift_sigma(torch.tensor(0.875), 3.0), 3.0)
    assert edge < 0.875 and layout.expert_of(edge[None] * 1000).item() == 1
    high = Stage2Model({"high": load_transformers(layout)["high"]}, layout, Stage2ObjectiveConfig(), VFM_DIM, VIEW)
    drawn = high.draw(torch.Size([256, 1]), torch.Generator().manual_seed(0))
    assert (drawn["expert"] == 0).all() and (drawn["sigma"] >= edge).all() and drawn["sigma"].min() < 0.9
    calls = []
    high.experts["high"].register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    batch = make_batch(batch=2) | {
        "noise": torch.randn(2, 16, 3, 8, 8),
        "sigma": torch.stack([edge, edge.new_tensor(0.9)]),
        "expert": torch.tensor([0, 0]),
    }
    loss, _ = high(batch)
    assert calls == [2] and torch.isfinite(loss)


def test_bad_block_index_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"align.block: 5 is out of range for a DiT of 2 blocks \(0 … 1\)"):
        build(tiny["wan"], "trd", block=5)


def test_per_token_timesteps_reach_the_dit(tiny):
    model = build(tiny["wan-ti2v"], "sara")
    seen = []
    model.experts["high"].condition_embedder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    batch = with_noise(model, make_batch(channels=48, side=4))
    loss, terms = model(batch)
    loss.backward()
    assert seen == [torch.Size([2 * 12])]  # (B, 3·2·2 tokens) flattened by the DiT: one timestep per token
    assert terms["align"] > 0 and model.projectors["high"].net[0].weight.grad is not None


def test_the_docs_name_every_alignment_objective_and_routing_of_the_registry():
    text = (Path(__file__).resolve().parents[1] / "docs" / "STAGE2.md").read_text()
    modes = next(part for part in text.split("\n- ") if part.startswith("**Modes**"))
    named = set(re.findall(r"`(\w+)`", modes))
    assert set(ALIGN_MODES) <= named and set(ROUTINGS) <= named, named
