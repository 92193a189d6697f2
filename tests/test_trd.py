"""TRD: the blockwise path against the dense reference, its properties and its errors."""

import pytest
import torch
import torch.nn.functional as F
from helpers import features, hard_mask
from torch.utils._python_dispatch import TorchDispatchMode

from sara.losses import repa_loss, trd_loss, trd_loss_dense
from sara.losses.trd_blockwise import panel_plan
from sara.routing import MODES, get_route

SALIENCIES = {
    "soft": lambda b, n: torch.rand(b, n),
    "hard": lambda b, n: hard_mask(b, n, 0.45),
}


def loss_and_grad(fn, pred, target, *args, **kwargs):
    loss = fn(pred, target, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, pred)
    return loss.detach(), grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", SALIENCIES)
@pytest.mark.parametrize("chunk", [1, 7, 16, 48, 100, None])
def test_blockwise_equals_dense(mode, kind, chunk):
    pred, target = features(3, 48, 24)
    saliency = SALIENCIES[kind](3, 48)
    dense = loss_and_grad(trd_loss_dense, pred, target, saliency, mode, 0.1)
    blockwise = loss_and_grad(trd_loss, pred, target, saliency, mode, 0.1, chunk_size=chunk)
    torch.testing.assert_close(blockwise[0], dense[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(blockwise[1], dense[1], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    pred, target = features(2, 11, 5, dtype=torch.float64)
    saliency = torch.rand(2, 11, dtype=torch.float64)
    saliency[0, :3] = 0  # zero blocks get skipped
    for chunk in (3, 4, 11):
        assert torch.autograd.gradcheck(lambda p, c=chunk: trd_loss(p, target, saliency, mode, 0.05, c), (pred,))
    assert torch.autograd.gradcheck(lambda p: trd_loss_dense(p, target, saliency, mode, 0.05), (pred,))


def test_plain_trd_is_the_videorepa_formula():
    pred, target = features(2, 40, 16)
    p, y = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    expected = F.relu((p @ p.mT - y @ y.mT).abs() - 0.1).mean()
    torch.testing.assert_close(trd_loss(pred, target, None, margin=0.1, chunk_size=9), expected)
    torch.testing.assert_close(trd_loss_dense(pred, target, None, margin=0.1), expected)
    torch.testing.assert_close(trd_loss(pred, target, torch.rand(2, 40), "none", 0.1), expected)


@pytest.mark.parametrize("fn", [trd_loss, trd_loss_dense])
def test_or_with_a_binary_mask_ignores_background_pairs(fn):
    pred, target = features(2, 30, 8)
    mask = hard_mask(2, 30, 0.4)
    fg = mask.bool()
    touches_fg = fg.unsqueeze(-1) | fg.unsqueeze(-2)  # (B, N, N)

    def reference(p):
        p, y = F.normalize(p, dim=-1), F.normalize(target, dim=-1)
        loss = F.relu((p @ p.mT - y @ y.mT).abs() - 0.1)
        return ((loss * touches_fg).sum((1, 2)) / touches_fg.sum((1, 2))).mean()

    loss, grad = loss_and_grad(fn, pred, target, mask, "or", 0.1)
    expected_loss, expected_grad = loss_and_grad(lambda p, _: reference(p), pred, target)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("fn", [trd_loss, trd_loss_dense])
def test_or_is_blind_to_background_background_relations(fn):
    # Subjects live in the first 2 coordinates. Rotating the background tokens' remaining
    # coordinates keeps every relation that touches a subject and every norm, and changes
    # only background–background relations: OR's loss and gradient must not move.
    tokens, dim = 20, 8
    mask = torch.zeros(1, tokens, dtype=torch.float64)
    mask[0, :4] = 1
    target = torch.randn(1, tokens, dim, dtype=torch.float64)
    target[0, :4, 2:] = 0
    rotations, _ = torch.linalg.qr(torch.randn(tokens - 4, dim - 2, dim - 2, dtype=torch.float64))
    rotated = target.clone()
    rotated[0, 4:, 2:] = (target[0, 4:, 2:].unsqueeze(1) @ rotations).squeeze(1)  # one rotation per token
    pred = torch.randn(1, tokens, dim, dtype=torch.float64, requires_grad=True)
    for margin in (0.0, 0.1):
        original = loss_and_grad(fn, pred, target, mask, "or", margin)
        changed = loss_and_grad(fn, pred, rotated, mask, "or", margin)
        torch.testing.assert_close(changed[0], original[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(changed[1], original[1], rtol=1e-10, atol=1e-12)
    # Uniform TRD does see the change, so the construction really moves BG–BG relations.
    assert not torch.allclose(fn(pred, target, None, "none", 0.0), fn(pred, rotated, None, "none", 0.0))


def test_a_sample_without_weight_contributes_zero():
    pred, target = features(2, 20, 8)
    saliency = torch.rand(2, 20)
    saliency[1] = 0  # AND and OR give this sample no supervised pair
    for fn in (trd_loss, trd_loss_dense):
        loss, grad = loss_and_grad(fn, pred, target, saliency, "or")
        alone = fn(pred[:1], target[:1], saliency[:1], "or")
        torch.testing.assert_close(loss, alone.detach() / 2)
        assert torch.isfinite(grad).all() and (grad[1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_fp32(dtype):
    pred, target = features(2, 64, 32, dtype=dtype)
    saliency = torch.rand(2, 64)
    loss, grad = loss_and_grad(trd_loss, pred, target, saliency, "or", chunk_size=24)
    assert loss.dtype == torch.float32 and grad.dtype == dtype  # the value is never rounded to half
    # the reference sees the same rounded inputs, in fp32 all the way
    reference = loss_and_grad(trd_loss_dense, pred.float().detach().requires_grad_(), target.float(), saliency, "or")
    torch.testing.assert_close(loss.float(), reference[0], rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(grad.float(), reference[1], rtol=5e-2, atol=2e-4)


def test_target_carries_no_gradient_and_pred_does():
    pred, target = features(1, 16, 8)
    target.requires_grad_()
    for fn in (trd_loss, trd_loss_dense):
        fn(pred, target, torch.rand(1, 16)).backward()
        assert target.grad is None
        assert pred.grad is not None and pred.grad.abs().sum() > 0
        pred.grad = None


def test_deterministic():
    pred, target = features(2, 70, 16)
    saliency = hard_mask(2, 70)
    first = loss_and_grad(trd_loss, pred, target, saliency, "or", chunk_size=16)
    second = loss_and_grad(trd_loss, pred, target, saliency, "or", chunk_size=16)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_teacher_width_may_differ():
    pred, target = features(2, 30, 12, target_dim=20)
    saliency = torch.rand(2, 30)
    dense = loss_and_grad(trd_loss_dense, pred, target, saliency, "xor")
    blockwise = loss_and_grad(trd_loss, pred, target, saliency, "xor", chunk_size=8)
    torch.testing.assert_close(blockwise, dense)


def test_without_grad_the_value_is_the_same():
    pred, target = features(2, 30, 12)
    saliency = torch.rand(2, 30)
    with_grad = trd_loss(pred, target, saliency)
    with torch.no_grad():
        without = trd_loss(pred, target, saliency)
    torch.testing.assert_close(without, with_grad.detach())


def test_zero_weight_blocks_are_skipped():
    # A sorted hard mask with 3 of 8 blocks in front: OR skips the BG–BG triangle,
    # AND keeps only FG–FG blocks, none keeps the whole upper triangle.
    saliency = torch.zeros(1, 64)
    saliency[0, :24] = 1
    blocks = {mode: panel_plan(saliency, get_route(mode), 8) for mode in MODES}
    assert len(blocks["none"]) == 8 and all(c1 == 64 for _, _, _, c1 in blocks["none"])
    assert [(r0, c1) for r0, _, _, c1 in blocks["or"]] == [(0, 64), (8, 64), (16, 64)]
    assert [(r0, c1) for r0, _, _, c1 in blocks["and"]] == [(0, 24), (8, 24), (16, 24)]
    assert [(r0, c0) for r0, _, c0, _ in blocks["xor"]] == [(0, 24), (8, 24), (16, 24)]


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


def test_blockwise_never_holds_an_n_by_n_tensor():
    batch, tokens, dim, chunk = 2, 512, 16, 32
    pred, target = features(batch, tokens, dim)
    saliency = torch.rand(batch, tokens)
    with _LargestTensor() as blockwise:
        trd_loss(pred, target, saliency, chunk_size=chunk).backward()
    with _LargestTensor() as dense:
        trd_loss_dense(pred, target, saliency).backward()
    assert dense.largest >= batch * tokens * tokens
    assert blockwise.largest <= max(batch * chunk * tokens, batch * tokens * dim)


@pytest.mark.parametrize(
    "pred_shape, target_shape, saliency, kwargs, message",
    [
        ((2, 10), (2, 10), None, {}, r"pred: expected a \[B, N, D\] tensor"),
        ((2, 10, 4), (2, 9, 4), None, {}, "target: shape .* does not match pred"),
        ((2, 10, 4), (3, 10, 4), None, {}, "target: shape .* does not match pred"),
        ((2, 10, 4), (2, 10, 4), torch.rand(2, 9), {}, "saliency: shape .* does not match"),
        ((2, 10, 4), (2, 10, 4), torch.rand(10), {}, r"saliency: expected a \[B, N\] tensor"),
        ((2, 10, 4), (2, 10, 4), torch.full((2, 10), -0.1), {}, r"saliency: .* outside \[0, 1\]"),
        ((2, 10, 4), (2, 10, 4), torch.full((2, 10), float("inf")), {}, "saliency: .* non-finite"),
        ((2, 10, 4), (2, 10, 4), torch.rand(2, 10), {"mode": "nand"}, "mode: .*none, and, or, xor"),
        ((2, 10, 4), (2, 10, 4), None, {"mode": "nand"}, "mode: .*none, and, or, xor"),
        ((2, 10, 4), (2, 10, 4), torch.rand(2, 10, device="meta"), {}, "saliency: on meta, pred on cpu"),
        ((2, 10, 4), (2, 10, 4), None, {"margin": -0.1}, "margin: must be a number >= 0"),
        ((2, 10, 4), (2, 10, 4), None, {"chunk_size": 0}, "chunk_size: must be a positive int"),
        ((2, 0, 4), (2, 0, 4), None, {}, r"pred: has no tokens"),
    ],
)
def test_bad_input_names_the_argument(pred_shape, target_shape, saliency, kwargs, message):
    pred, target = torch.randn(pred_shape), torch.randn(target_shape)
    with pytest.raises(ValueError, match=message):
        trd_loss(pred, target, saliency, **kwargs)
    if "chunk_size" not in kwargs:
        with pytest.raises(ValueError, match=message):
            trd_loss_dense(pred, target, saliency, **kwargs)


def test_repa_is_one_minus_cosine():
    pred, target = features(2, 10, 8)
    expected = (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    torch.testing.assert_close(repa_loss(pred, target), expected)
    assert repa_loss(target.clone(), target).abs() < 1e-6
    target.requires_grad_()
    repa_loss(pred, target).backward()
    assert target.grad is None and pred.grad is not None
    with pytest.raises(ValueError, match="target: shape .* does not match pred"):
        repa_loss(pred, torch.randn(2, 10, 9))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("count", [2, 3, 4])
def test_parts_sum_to_the_loss_and_its_gradient(mode, count):
    pred, target = features(2, 96, 16)
    saliency = hard_mask(2, 96, 0.4) if mode != "none" else None
    whole = loss_and_grad(trd_loss, pred, target, saliency, mode, 0.1, chunk_size=8)
    parts = [
        loss_and_grad(trd_loss, pred, target, saliency, mode, 0.1, chunk_size=8, part=(i, count)) for i in range(count)
    ]
    torch.testing.assert_close(sum(p[0] for p in parts), whole[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sum(p[1] for p in parts), whole[1], rtol=1e-5, atol=1e-9)
    assert all(p[0] < whole[0] for p in parts)  # each part is a real share, not the whole
    repa = loss_and_grad(repa_loss, pred, target)
    repa_parts = [loss_and_grad(repa_loss, pred, target, part=(i, count)) for i in range(count)]
    torch.testing.assert_close(sum(p[0] for p in repa_parts), repa[0])
    torch.testing.assert_close(sum(p[1] for p in repa_parts), repa[1])


def test_a_part_outside_its_count_is_refused():
    pred, target = features(1, 8, 4)
    for fn in (trd_loss, repa_loss):
        with pytest.raises(ValueError, match=r"part: \(2, 2\) is not one of 2 shares"):
            fn(pred, target, part=(2, 2))
