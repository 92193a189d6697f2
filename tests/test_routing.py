"""Pair routing: weights, closed-form normalisers and the pair budget."""

import pytest
import torch
from references import pair_weights

from sara.routing import MODES, pair_budget, pair_weight_sum

FORMULAS = {
    "none": lambda a, b: torch.ones_like(a * b),
    "and": lambda a, b: a * b,
    "or": lambda a, b: a + b - a * b,
    "xor": lambda a, b: a + b - 2 * a * b,
}


@pytest.mark.parametrize("mode", MODES)
def test_pair_weights_follow_the_formula(mode):
    w = torch.rand(3, 17, dtype=torch.float64)
    expected = FORMULAS[mode](w.unsqueeze(-1), w.unsqueeze(-2))
    torch.testing.assert_close(pair_weights(w, mode), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["soft", "hard", "zeros", "ones"])
def test_closed_form_normaliser_equals_dense_sum(mode, kind):
    w = {
        "soft": torch.rand(4, 33, dtype=torch.float64),
        "hard": (torch.rand(4, 33) > 0.5).double(),
        "zeros": torch.zeros(4, 33, dtype=torch.float64),
        "ones": torch.ones(4, 33, dtype=torch.float64),
    }[kind]
    torch.testing.assert_close(pair_weight_sum(w, mode), pair_weights(w, mode).sum(dim=(1, 2)), rtol=1e-12, atol=1e-12)


def test_and_is_contained_in_or():
    w = torch.rand(2, 40)
    w[:, :10] = 0
    w[:, 10:15] = 1
    weight_and, weight_or = pair_weights(w, "and"), pair_weights(w, "or")
    assert (weight_and <= weight_or + 1e-7).all()
    assert ((weight_and > 0) <= (weight_or > 0)).all()
    assert (weight_or > 0).sum() > (weight_and > 0).sum()


def test_or_gives_no_weight_to_background_pairs_only():
    mask = (torch.rand(2, 50) > 0.5).float()
    weights = pair_weights(mask, "or")
    fg = mask.bool()
    bg_bg = ~fg.unsqueeze(-1) & ~fg.unsqueeze(-2)
    assert (weights[bg_bg] == 0).all()
    assert (weights[~bg_bg] == 1).all()
    xor = pair_weights(mask, "xor")
    fg_bg = fg.unsqueeze(-1) ^ fg.unsqueeze(-2)
    assert (xor[fg_bg] == 1).all() and (xor[~fg_bg] == 0).all()


def test_pair_budget_matches_the_paper_figures_at_p_048():
    tokens = 2500
    mask = torch.zeros(tokens)
    mask[torch.randperm(tokens)[:1200]] = 1  # p = 0.48 exactly
    budget = pair_budget(mask)
    assert budget["fg_fraction"] == pytest.approx(0.48)
    shares = budget["pair_share"]
    assert 100 * shares["fg_fg"] == pytest.approx(23.0, abs=0.1)
    assert 100 * shares["fg_bg"] == pytest.approx(49.9, abs=0.1)
    assert 100 * shares["bg_bg"] == pytest.approx(27.0, abs=0.1)
    assert 100 * budget["modes"]["or"]["active_pairs"] == pytest.approx(73.0, abs=0.1)
    assert 100 * budget["modes"]["and"]["active_pairs"] == pytest.approx(23.0, abs=0.1)
    assert budget["modes"]["or"]["mass_share"]["bg_bg"] == 0
    assert budget["modes"]["and"]["mass_share"]["fg_fg"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode", MODES)
def test_pair_budget_equals_brute_force(mode):
    w = torch.rand(3, 60, dtype=torch.float64)
    w[:, :8] = 0  # exact zeros and ones decide which pairs are active
    w[:, 8:14] = 1
    budget = pair_budget(w, threshold=0.4)
    weights = pair_weights(w, mode)
    fg = w > 0.4
    categories = {
        "fg_fg": fg.unsqueeze(-1) & fg.unsqueeze(-2),
        "fg_bg": fg.unsqueeze(-1) ^ fg.unsqueeze(-2),
        "bg_bg": ~fg.unsqueeze(-1) & ~fg.unsqueeze(-2),
    }
    for name, members in categories.items():
        expected = (weights * members).sum() / weights.sum()
        assert budget["modes"][mode]["mass_share"][name] == pytest.approx(expected.item(), abs=1e-12)
        assert budget["pair_share"][name] == pytest.approx(members.double().mean().item(), abs=1e-12)
    assert budget["modes"][mode]["active_pairs"] == pytest.approx((weights > 0).double().mean().item(), abs=1e-12)
    assert budget["fg_fraction"] == pytest.approx(fg.double().mean().item())


def test_pair_budget_accepts_a_single_sample():
    w = torch.rand(30)
    assert pair_budget(w) == pair_budget(w.unsqueeze(0))


@pytest.mark.parametrize(
    "saliency, message",
    [
        (torch.rand(5), r"saliency: expected a \[B, N\] tensor"),
        (torch.full((2, 5), 1.5), "outside \\[0, 1\\]"),
        (torch.tensor([[0.2, float("nan")]]), "non-finite"),
        (torch.ones(2, 5, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_saliency_is_named(saliency, message):
    with pytest.raises(ValueError, match=message):
        pair_weights(saliency, "or")


def test_unknown_mode_lists_the_choices():
    with pytest.raises(ValueError, match="mode: unknown routing 'nor'; choose one of none, and, or, xor"):
        pair_weights(torch.rand(1, 4), "nor")
