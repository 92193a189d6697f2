"""Token-relation distillation (TRD) with saliency-routed pairs, and the REPA baseline.

Pure tensor functions: no model calls, no ``torch.distributed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sara.losses.trd_blockwise import BlockwiseTRD, panel_plan
from sara.routing import Route, check_saliency, get_route, pair_weight_sum


def _check_features(pred: Tensor, target: Tensor, same_width: bool) -> None:
    """Raise ``ValueError`` naming the argument unless pred/target are matching ``[B, N, D]``."""
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a [B, N, D] tensor, got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        if x.shape[1] == 0:
            raise ValueError(f"{name}: has no tokens (N = 0)")
    compared = pred.shape if same_width else pred.shape[:2]
    if (target.shape if same_width else target.shape[:2]) != compared:
        what = "[B, N, D]" if same_width else "[B, N]"
        raise ValueError(f"target: shape {tuple(target.shape)} does not match pred {tuple(pred.shape)} in {what}")
    if target.device != pred.device:
        raise ValueError(f"target: on {target.device}, pred on {pred.device}")


def _normalise(x: Tensor) -> Tensor:
    """L2-normalise the last axis in fp32 (fp64 stays fp64), returned in the input dtype."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    return F.normalize(x.to(compute), dim=-1).to(x.dtype)


def auto_chunk(tokens: int) -> int:
    """Row-block size of the blockwise path: large enough for efficient products, small
    enough that a ``chunk × N`` panel stays far below the dense ``N × N``."""
    return 256 if tokens <= 2048 else 512


def _prepare(
    pred: Tensor, target: Tensor, saliency: Tensor | None, mode: str, margin: float, chunk_size: int | None = None
) -> tuple[Tensor, Tensor, Tensor, Route, str]:
    """Validate the inputs; return the normalised features, the saliency, the route and the mode."""
    _check_features(pred, target, same_width=False)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"margin: must be a number >= 0, got {margin!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: must be a positive int or None, got {chunk_size!r}")
    get_route(mode)  # an unknown mode is an error even without a saliency
    batch, tokens, _ = pred.shape
    if saliency is None:
        # Plain TRD: a zero saliency under "none" weighs every pair 1.
        mode, saliency = "none", torch.zeros(batch, tokens, device=pred.device)
    route = get_route(mode)
    if isinstance(saliency, Tensor) and saliency.device != pred.device:
        raise ValueError(f"saliency: on {saliency.device}, pred on {pred.device}")
    check_saliency(saliency, batch, tokens)
    saliency = saliency.detach()  # routing decides weights; it is not trained through the loss
    return _normalise(pred), _normalise(target.detach()), saliency, route, mode


def _check_part(part: tuple[int, int]) -> None:
    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"part: ({index}, {count}) is not one of {count} shares")


def _skip_order(saliency: Tensor, mode: str) -> Tensor | None:
    """A per-sample token order ``[B, N]`` that gathers zero-weight pairs into whole blocks,
    or ``None`` when no weight can vanish.

    Only saliencies of exactly 0 or 1 give zero-weight pairs (e.g. background–background
    under ``or``). Salient tokens go first; the loss is a sum over pairs, hence invariant
    to a common token permutation.
    """
    if mode != "none" and ((saliency == 0) | (saliency == 1)).any():
        return torch.argsort(saliency, dim=1, descending=True, stable=True)
    return None


def trd_loss_dense(
    pred: Tensor, target: Tensor, saliency: Tensor | None = None, mode: str = "or", margin: float = 0.1
) -> Tensor:
    """Reference TRD with the full ``[B, N, N]`` matrices (small N, tests, benchmarks).

    Same contract as :func:`trd_loss`.
    """
    p, y, w, route, mode = _prepare(pred, target, saliency, mode, margin)
    compute = torch.float64 if p.dtype == torch.float64 else torch.float32
    p, y, w = p.to(compute), y.to(compute), w.to(compute)
    s_p = p @ p.mT  # (B, N, N) student token relations
    s_y = y @ y.mT  # (B, N, N) teacher token relations
    loss = F.relu((s_p - s_y).abs() - margin)  # (B, N, N) l_ij
    weights = route.weights(w, w)  # (B, N, N) W_ij
    normaliser = pair_weight_sum(w, mode)  # (B,) Σ W_ij
    per_sample = (weights * loss).sum(dim=(1, 2)) / torch.where(normaliser > 0, normaliser, 1.0)
    return per_sample.mean()


def trd_loss(
    pred: Tensor,
    target: Tensor,
    saliency: Tensor | None = None,
    mode: str = "or",
    margin: float = 0.1,
    chunk_size: int | None = None,
    part: tuple[int, int] = (0, 1),
) -> Tensor:
    """Saliency-routed token-relation distillation loss.

    ``S_p = P Pᵀ`` and ``S_y = Y Yᵀ`` are the cosine-similarity matrices of the
    L2-normalised tokens; ``l_ij = relu(|S_p[i,j] − S_y[i,j]| − margin)``; each sample's
    loss is ``Σ W_ij l_ij / Σ W_ij`` with ``W`` from :mod:`sara.routing`, and the batch
    averages its samples. A sample whose weights are all zero contributes 0.

    Args:
        pred: ``[B, N, Dp]`` student tokens (e.g. projected DiT states); carries the gradient.
        target: ``[B, N, Dy]`` teacher tokens (e.g. V-JEPA 2); detached. ``Dy`` may differ
            from ``Dp``: only the N×N relations are compared.
        saliency: ``[B, N]`` in [0, 1], or ``None`` for plain TRD (VideoREPA: the mean of
            ``l`` over all N² pairs). Not differentiated.
        mode: ``none``, ``and``, ``or`` (SARA) or ``xor``.
        margin: ``>= 0``; differences below it are not penalised.
        chunk_size: row-block size of the exact memory-efficient path; ``None`` picks one.
            The loss and its gradient do not depend on it (up to float rounding).
        part: ``(i, n)``: only the ``i``-th of ``n`` exact shares of the pairs (a share of
            the row blocks, over the global normaliser); the ``n`` shares sum to the loss.
            Sequence parallelism gives each rank one, on the same gathered inputs.

    Returns:
        The scalar loss in its accumulation dtype: fp32, or fp64 for fp64 inputs (as autocast
        keeps losses in fp32); the gradient reaching ``pred`` is in ``pred``'s dtype.
    """
    p, y, w, route, mode = _prepare(pred, target, saliency, mode, margin, chunk_size)
    _check_part(part)
    normaliser = pair_weight_sum(w, mode)  # (B,)
    order = _skip_order(w, mode)
    if order is not None:
        w = torch.gather(w, 1, order)
        p = torch.gather(p, 1, order.unsqueeze(-1).expand_as(p))
        y = torch.gather(y, 1, order.unsqueeze(-1).expand_as(y))
    chunk = chunk_size or auto_chunk(p.shape[1])
    return BlockwiseTRD.apply(p, y, w, route, float(margin), chunk, normaliser, part)


def visited_panels(saliency: Tensor, mode: str, chunk_size: int | None = None) -> list[tuple[int, int, int, int]]:
    """The panels ``(r0, r1, c0, c1)`` that :func:`trd_loss` computes for a ``[B, N]``
    saliency (plain TRD: zeros with ``mode="none"``); for benchmarks and reports."""
    order = _skip_order(saliency, mode)
    w = saliency if order is None else torch.gather(saliency, 1, order)
    return panel_plan(w, get_route(mode), chunk_size or auto_chunk(saliency.shape[1]))


def repa_loss(pred: Tensor, target: Tensor, part: tuple[int, int] = (0, 1)) -> Tensor:
    """REPA baseline: ``1 − cos(pred_n, target_n)`` averaged over tokens and the batch.

    Args:
        pred: ``[B, N, D]`` student tokens; carries the gradient.
        target: ``[B, N, D]`` teacher tokens; detached.
        part: ``(i, n)``: only the ``i``-th of ``n`` contiguous token shares, still divided
            by ``B·N``; the ``n`` shares sum to the loss.

    Returns:
        The scalar loss in [0, 2], in fp32 (fp64 for fp64 inputs).
    """
    _check_features(pred, target, same_width=True)
    _check_part(part)
    compute = torch.float64 if pred.dtype == torch.float64 else torch.float32
    rows = torch.tensor_split(torch.arange(pred.shape[1], device=pred.device), part[1])[part[0]]
    cosine = F.cosine_similarity(pred[:, rows].to(compute), target[:, rows].detach().to(compute), dim=-1)  # (B, n)
    return (1 - cosine).sum() / pred.shape[:2].numel()
