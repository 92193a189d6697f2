"""Saliency BCE + Dice and InfoNCE against hand-computed small cases."""

import math

import pytest
import torch

from sara.losses import info_nce, saliency_losses


def test_saliency_losses_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 0.5 and 0.75
    target = torch.tensor([[0.0, 1.0]])
    bce, dice = saliency_losses(logits, target, eps=0.0)
    torch.testing.assert_close(bce, torch.tensor((math.log(2) + math.log(4 / 3)) / 2))
    torch.testing.assert_close(dice, torch.tensor(1 - 2 * 0.75 / (1.25 + 1.0)))


def test_dice_is_zero_for_an_empty_target_and_prediction():
    _, dice = saliency_losses(torch.full((2, 4), -30.0), torch.zeros(2, 4))
    assert dice.item() < 1e-6


def test_saliency_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="target"):
        saliency_losses(torch.zeros(2, 4), torch.zeros(2, 5))


def test_info_nce_hand_computed():
    visual = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    scale = torch.tensor(0.0)  # temperature 1
    s = 1 / math.sqrt(2)
    logits = torch.tensor([[1.0, s], [0.0, s]])
    rows = [-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(2)]
    cols = [-(logits[i, i] - torch.logsumexp(logits[:, i], 0)) for i in range(2)]
    torch.testing.assert_close(info_nce(visual, text, scale), (sum(rows) / 2 + sum(cols) / 2) / 2)


def test_info_nce_leaves_repeated_captions_out():
    visual = torch.randn(3, 4)
    text = torch.randn(3, 4)
    text[2] = text[0]  # rows 0 and 2 carry the same caption
    same = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    masked = info_nce(visual, text, torch.tensor(1.0), same)
    # with the duplicate left out, rows 0/2 are two independent 2-way problems
    unmasked = info_nce(visual, text, torch.tensor(1.0))
    assert masked < unmasked
    assert torch.isfinite(masked)


def test_info_nce_temperature_is_capped():
    visual, text = torch.eye(2), torch.eye(2)
    assert info_nce(visual, text, torch.tensor(10.0)) == info_nce(visual, text, torch.tensor(math.log(100.0)))
