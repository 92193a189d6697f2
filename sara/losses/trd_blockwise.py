"""Exact, memory-efficient token-relation distillation (TRD).

The dense loss builds ``S_p = P Pᵀ`` and ``S_y = Y Yᵀ`` (``[B, N, N]`` each, plus as many
temporaries again in autograd). Here the N×N matrices are never held. Two facts make
this both small and fast:

1. The loss is a scalar, so its gradient with respect to the normalised features ``P``
   can be accumulated panel by panel *during the forward* and only scaled by the
   incoming gradient in backward (the trick of fused linear-cross-entropy kernels).
2. ``W`` and ``|S_p − S_y|`` are symmetric, so only the upper triangle of row-block
   panels is visited: panel ``I`` holds rows ``[r0, r1)`` against columns ``[r0, c1)``.
   With ``G_ij = W_ij sign(Δ_ij) 1[|Δ_ij| > margin]`` the gradient is ``dL/dP = 2 G P``;
   a panel contributes ``G_panel P_cols`` to its rows and ``G_panelᵀ P_rows`` to its
   columns. Pairs inside the diagonal block are seen once, the others stand for both
   ``(i, j)`` and ``(j, i)``, so the diagonal block's weights are halved and the
   panel's loss counted twice.

Per panel that is four products (``S_p``, ``S_y`` and two gradient products) over half
the pairs: about ``2·N²·D`` multiply-adds in all, against dense autograd's ``4·N²·D``.
Peak extra memory is ``O(B·N·D)`` for the gradient accumulator plus ``O(B·chunk·N)`` for
one panel.

**Parts.** The panels are independent terms of one sum, so the loss splits exactly into
``n`` parts, each a share of the row blocks (dealt round-robin, which balances the
triangle's shrinking rows): part ``i`` sums its panels' pairs over the *global*
normaliser, and the ``n`` parts add up to the loss, their gradients to its gradient.
Sequence-parallel training gives each rank one part (``sara.parallel``); no rank builds
more than ``chunk × N`` of the relation matrices.

Zero-weight pairs are skipped: tokens are sorted by saliency (descending) before the
call, so hard masks leave whole blocks of zero weight at the end (background–background
under ``or``), and every block pair whose largest weight is zero is never computed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sara.routing import Route


def _block_bounds(saliency: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Per-block min and max of the saliency: ``[B, N] -> ([B, nb], [B, nb])``."""
    batch, tokens = saliency.shape
    pad = -tokens % chunk
    # Repeating the last value leaves each block's min and max unchanged.
    padded = torch.cat([saliency, saliency[:, -1:].expand(batch, pad)], dim=1)
    blocks = padded.view(batch, -1, chunk)  # (B, nb, chunk)
    return blocks.amin(dim=-1), blocks.amax(dim=-1)


def panel_plan(saliency: Tensor, route: Route, chunk: int) -> list[tuple[int, int, int, int]]:
    """Panels ``(r0, r1, c0, c1)`` of the upper block triangle that hold a non-zero weight.

    ``W`` is bilinear in ``(w_i, w_j)``, so its maximum over a block pair is reached at a
    corner of the box spanned by the two blocks' saliency ranges; a block pair is
    skipped when that maximum is zero for every sample. Each row block keeps one
    contiguous column range (the hull of its active blocks), which keeps the skip exact.
    """
    tokens = saliency.shape[1]
    lo, hi = _block_bounds(saliency, chunk)  # (B, nb)
    corners = [
        route.alpha * (a.unsqueeze(-1) + b.unsqueeze(-2)) + route.beta * a.unsqueeze(-1) * b.unsqueeze(-2) + route.gamma
        for a in (lo, hi)
        for b in (lo, hi)
    ]
    active = torch.stack(corners).amax(dim=(0, 1)) > 0  # (nb, nb)
    active = torch.triu(active).cpu()  # one host sync for the whole plan
    plan = []
    for block, row in enumerate(active):
        columns = row.nonzero().flatten().tolist()
        if columns:
            r0 = block * chunk
            plan.append((r0, min(r0 + chunk, tokens), columns[0] * chunk, min((columns[-1] + 1) * chunk, tokens)))
    return plan


def matmul_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """Half-precision products stay in half precision on CUDA (tensor cores accumulate in
    fp32); elsewhere they run in the fp32 (or fp64) accumulation dtype."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return dtype
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def trd_blockwise_forward(
    p: Tensor,
    y: Tensor,
    saliency: Tensor,
    route: Route,
    margin: float,
    chunk: int,
    normaliser: Tensor,
    with_grad: bool = True,
    part: tuple[int, int] = (0, 1),
) -> tuple[Tensor, Tensor | None]:
    """Loss and (when ``with_grad``) its gradient with respect to ``p``, panel by panel;
    with ``part = (i, n)`` only the ``i``-th of ``n`` shares of the row blocks.

    Args:
        p: ``[B, N, Dp]`` L2-normalised student tokens.
        y: ``[B, N, Dy]`` L2-normalised teacher tokens.
        saliency: ``[B, N]`` in [0, 1], sorted descending per sample (zeros for ``none``).
        normaliser: ``[B]`` the closed-form ``Σ_ij W_ij``.

    Returns:
        The batch-mean loss ``[]`` and ``dloss/dp`` ``[B, N, Dp]`` (or ``None``), both in
        the accumulation dtype (fp32, or fp64 for fp64 inputs).
    """
    acc = torch.float64 if p.dtype == torch.float64 else torch.float32
    mm = matmul_dtype(p.dtype, p.device)
    p, y, w = p.to(mm), y.to(mm), saliency.to(acc)
    batch = p.shape[0]
    grad = torch.zeros(p.shape, dtype=acc, device=p.device) if with_grad else None  # (B, N, Dp) G P
    total = torch.zeros(batch, dtype=acc, device=p.device)  # (B,) Σ W l
    index, count = part
    for r0, r1, c0, c1 in panel_plan(w, route, chunk)[index::count]:
        p_rows, p_cols = p[:, r0:r1], p[:, c0:c1]  # (B, R, Dp), (B, C, Dp)
        delta = torch.bmm(p_rows, p_cols.mT).to(acc)  # (B, R, C) S_p panel
        delta -= torch.bmm(y[:, r0:r1], y[:, c0:c1].mT)  # S_p − S_y
        weights = route.weights(w[:, r0:r1], w[:, c0:c1])  # (B, R, C)
        if c0 == r0:
            weights[:, :, : r1 - r0] *= 0.5  # the diagonal block is visited once, not twice
        loss = delta.abs().sub_(margin).clamp_(min=0)  # (B, R, C) l_ij
        total += 2 * torch.linalg.vecdot(weights.flatten(1), loss.flatten(1))
        if not with_grad:
            continue
        # dl/dS_p = sign(Δ) where |Δ| > margin (0 at the kink, as autograd's relu and abs give)
        g = weights.mul_(delta.sign_()).masked_fill_(loss == 0, 0).to(mm)  # (B, R, C)
        grad[:, r0:r1] += torch.bmm(g, p_cols)
        grad[:, c0:c1] += torch.bmm(g.mT, p_rows)
    # A sample whose weights are all zero has no supervised pair: its loss is 0, not 0/0.
    normaliser = torch.where(normaliser > 0, normaliser.to(acc), 1.0)
    loss = (total / normaliser).mean()
    if with_grad:
        grad *= (2 / (normaliser * batch)).view(-1, 1, 1)  # dL/dP = 2 G P
    return loss, grad


class BlockwiseTRD(torch.autograd.Function):
    """Autograd wrapper: the gradient is computed in forward and only scaled in backward."""

    @staticmethod
    def forward(ctx, p, y, saliency, route, margin, chunk, normaliser, part):  # noqa: D102
        with_grad = ctx.needs_input_grad[0]
        loss, grad = trd_blockwise_forward(p, y, saliency, route, margin, chunk, normaliser, with_grad, part)
        if with_grad:
            ctx.save_for_backward(grad.to(p.dtype))
        return loss  # fp32 (fp64): a bf16 scalar would round the value every rank logs and sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):  # noqa: D102
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None, None, None, None, None, None
