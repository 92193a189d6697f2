"""Pair routing: which token pairs of the relation loss carry supervision.

A per-token saliency ``w ∈ [0, 1]^N`` (on the VFM token grid) turns into a weight
``W_ij`` for every token pair. All four modes are the same bilinear form

    W_ij = alpha * (w_i + w_j) + beta * w_i * w_j + gamma

with a different coefficient triple, so one code path serves every mode: the dense
matrix, the closed-form sums over any block of pairs (the loss normaliser, the
per-category mass of ``pair_budget``) and the blockwise loss kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

CATEGORIES = ("fg_fg", "fg_bg", "bg_bg")


@dataclass(frozen=True)
class Route:
    """Coefficients of ``W_ij = alpha (w_i + w_j) + beta w_i w_j + gamma``."""

    alpha: float
    beta: float
    gamma: float

    def weights(self, w_rows: Tensor, w_cols: Tensor) -> Tensor:
        """Weights of the block of pairs ``rows × cols``: ``[B, R]``, ``[B, C]`` -> ``[B, R, C]``.

        Written as ``a_i * w_j + b_i`` so that the block costs a single fused pass.
        """
        a = self.alpha + self.beta * w_rows  # (B, R)
        b = self.gamma + self.alpha * w_rows  # (B, R)
        return torch.addcmul(b.unsqueeze(-1), a.unsqueeze(-1), w_cols.unsqueeze(-2))

    def block_sum(self, n_a: Tensor, s_a: Tensor, n_b: Tensor, s_b: Tensor) -> Tensor:
        """``Σ_{i∈A, j∈B} W_ij`` from the sizes ``n`` and saliency sums ``s`` of the two sets."""
        return self.alpha * (n_b * s_a + n_a * s_b) + self.beta * s_a * s_b + self.gamma * n_a * n_b


ROUTES: dict[str, Route] = {
    "none": Route(alpha=0.0, beta=0.0, gamma=1.0),  # plain TRD: every pair
    "and": Route(alpha=0.0, beta=1.0, gamma=0.0),  # subject–subject only
    "or": Route(alpha=1.0, beta=-1.0, gamma=0.0),  # SARA: any pair touching a subject
    "xor": Route(alpha=1.0, beta=-2.0, gamma=0.0),  # subject–background only
}
MODES = tuple(ROUTES)


def get_route(mode: str) -> Route:
    """The coefficients of a routing mode; unknown modes raise ``ValueError`` listing the choices."""
    try:
        return ROUTES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode: unknown routing {mode!r}; choose one of {', '.join(MODES)}") from None


def check_saliency(saliency: Tensor, batch: int | None = None, tokens: int | None = None) -> None:
    """Raise ``ValueError`` naming ``saliency`` unless it is a finite ``[B, N]`` tensor in [0, 1]."""
    if not isinstance(saliency, Tensor) or saliency.dim() != 2:
        shape = tuple(saliency.shape) if isinstance(saliency, Tensor) else type(saliency).__name__
        raise ValueError(f"saliency: expected a [B, N] tensor, got {shape}")
    if batch is not None and tuple(saliency.shape) != (batch, tokens):
        raise ValueError(
            f"saliency: shape {tuple(saliency.shape)} does not match the features' [B, N] = {(batch, tokens)}"
        )
    if not saliency.is_floating_point():
        raise ValueError(f"saliency: expected a floating-point tensor, got {saliency.dtype}")
    outside = ~((saliency >= 0) & (saliency <= 1))  # NaN fails both comparisons
    if outside.any():
        bad = saliency[outside]
        raise ValueError(f"saliency: {bad.numel()} value(s) are non-finite or outside [0, 1], e.g. {bad[0].item():.4g}")


def pair_weight_sum(saliency: Tensor, mode: str) -> Tensor:
    """Closed-form ``Σ_ij W_ij`` per sample, ``[B, N] -> [B]``, without the N×N matrix.

    With ``s = Σ w``: none ``N²``, and ``s²``, or ``2Ns − s²``, xor ``2Ns − 2s²``.
    The diagonal pairs are included, as in VideoREPA's mean over all N² pairs.
    """
    route = get_route(mode)
    n = torch.full_like(saliency[:, 0], saliency.shape[1], dtype=torch.float64)
    s = saliency.double().sum(dim=1)  # (B,)
    return route.block_sum(n, s, n, s).to(torch.promote_types(saliency.dtype, torch.float32))


def _active_fraction(route: Route, zero: int, one: int, partial: int) -> float:
    """Fraction of pairs with ``W_ij > 0``, from how many tokens have w = 0, w = 1 or 0 < w < 1.

    For the four modes the sign of ``W`` is constant on each pair of these classes
    (e.g. xor vanishes only on 0–0 and 1–1), so one value per class decides it.
    """
    counts = {0.0: zero, 1.0: one, 0.5: partial}
    total = zero + one + partial
    active = 0
    for value_a, n_a in counts.items():
        for value_b, n_b in counts.items():
            weight = route.alpha * (value_a + value_b) + route.beta * value_a * value_b + route.gamma
            active += n_a * n_b * (weight > 0)
    return active / total**2


def pair_budget(saliency: Tensor, threshold: float = 0.5) -> dict:
    """How each routing mode spends its pair budget.

    Args:
        saliency: ``[B, N]`` or ``[N]`` in [0, 1]; statistics pool all samples.
        threshold: a token is foreground (FG) when its saliency exceeds it.

    Returns:
        ``{"tokens", "fg_fraction", "pair_share": {category: share},
        "modes": {mode: {"mass_share": {category: share}, "active_pairs": fraction}}}``
        with categories ``fg_fg``, ``fg_bg`` (both orders) and ``bg_bg``. ``pair_share``
        is what uniform TRD spends on each category; ``mass_share`` is each mode's share of
        its total weight ``Σ W_ij``; ``active_pairs`` is the fraction of pairs with
        ``W_ij > 0``.
    """
    if isinstance(saliency, Tensor) and saliency.dim() == 1:
        saliency = saliency.unsqueeze(0)
    check_saliency(saliency)
    w = saliency.double()
    fg = w > threshold
    n_fg = fg.sum(dim=1).double()  # (B,)
    n_bg = w.shape[1] - n_fg
    s_fg = (w * fg).sum(dim=1)
    s_bg = w.sum(dim=1) - s_fg

    def shares(masses: dict[str, Tensor]) -> dict[str, float]:
        total = sum(m.sum() for m in masses.values())
        return {k: (m.sum() / total).item() if total > 0 else 0.0 for k, m in masses.items()}

    zero, one = (w == 0).sum().item(), (w == 1).sum().item()
    partial = w.numel() - zero - one
    modes = {}
    for mode, route in ROUTES.items():
        masses = {
            "fg_fg": route.block_sum(n_fg, s_fg, n_fg, s_fg),
            "fg_bg": 2 * route.block_sum(n_fg, s_fg, n_bg, s_bg),
            "bg_bg": route.block_sum(n_bg, s_bg, n_bg, s_bg),
        }
        modes[mode] = {
            "mass_share": shares(masses),
            "active_pairs": _active_fraction(route, zero, one, partial),
        }
    return {
        "tokens": w.numel(),
        "fg_fraction": (n_fg.sum() / w.numel()).item(),
        # uniform TRD weighs every pair alike, so its mass shares are the pair shares
        "pair_share": modes["none"]["mass_share"],
        "modes": modes,
    }
