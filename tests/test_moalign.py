"""MoAlign's relational loss: against a dense reference of its formula, in value and gradient;
its frame-pair weights; exact shares for sequence parallelism; zero when the relations agree;
clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from sara.losses.moalign import frame_pair_weights, moalign_loss


def _reference(pred, target, frames, tau):
    """The formula written out: full relation matrices, one frame pair at a time."""
    z, m = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    error = (z @ z.mT - m @ m.mT).abs()  # (B, N, N)
    s = pred.shape[1] // frames
    block = lambda f, g: error[:, f * s : (f + 1) * s, g * s : (g + 1) * s].mean(dim=(1, 2))  # noqa: E731
    spatial = sum(block(f, f) for f in range(frames)) / frames
    pairs = [(f, g) for f in range(frames) for g in range(frames) if f != g]
    omega = {p: math.exp(-abs(p[0] - p[1]) / tau) for p in pairs}
    temporal = sum(omega[p] * block(*p) for p in pairs) / sum(omega.values()) if pairs else 0.0
    return (spatial + temporal).mean()


@pytest.mark.parametrize("frames,tau", [(3, 10.0), (4, 0.5), (1, 10.0)])
def test_loss_and_gradient_match_the_formula(frames, tau):
    torch.manual_seed(0)
    tokens = frames * 6  # a 2 × 3 grid per frame: not square
    pred = torch.randn(2, tokens, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, tokens, 3, dtype=torch.float64)  # another width: only relations compared
    loss = moalign_loss(pred, target, frames, tau)
    (grad,) = torch.autograd.grad(loss, pred)
    expected = _reference(pred, target, frames, tau)
    (expected_grad,) = torch.autograd.grad(expected, pred)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_frame_pair_weights_split_spatial_and_temporal_halves():
    w = frame_pair_weights(4, tau=1.0)
    torch.testing.assert_close(w.diagonal(), torch.full((4,), 0.25, dtype=torch.float64))
    off = w - torch.diag(w.diagonal())
    assert math.isclose(off.sum().item(), 1.0) and off[0, 1] > off[0, 2] > off[0, 3] > 0  # near frames weigh most
    torch.testing.assert_close(frame_pair_weights(1, 10.0), torch.ones(1, 1, dtype=torch.float64))


@pytest.mark.parametrize("count", [2, 3, 5])
def test_shares_sum_to_the_loss(count):
    torch.manual_seed(1)
    pred, target = torch.randn(2, 4 * 3, 4, dtype=torch.float64), torch.randn(2, 12, 2, dtype=torch.float64)
    whole = moalign_loss(pred, target, frames=4)
    shares = [moalign_loss(pred, target, frames=4, part=(i, count)) for i in range(count)]  # 5 > 4 frames: one empty
    torch.testing.assert_close(sum(shares), whole)


def test_zero_when_the_relations_agree():
    target = torch.randn(1, 8, 3)
    assert moalign_loss(3.0 * target, target, frames=2).item() == pytest.approx(0.0, abs=1e-6)
    assert moalign_loss(torch.randn(1, 8, 3), target, frames=2).item() > 0.1


def test_bad_inputs_name_the_argument():
    x = torch.randn(1, 6, 2)
    with pytest.raises(ValueError, match="frames: 4 does not divide the 6 tokens"):
        moalign_loss(x, x, frames=4)
    with pytest.raises(ValueError, match="tau"):
        moalign_loss(x, x, frames=2, tau=0.0)
    with pytest.raises(ValueError, match="part"):
        moalign_loss(x, x, frames=2, part=(2, 2))
    with pytest.raises(ValueError, match=r"expected \[B, N, D\]"):
        moalign_loss(x, torch.randn(1, 5, 2), frames=1)
