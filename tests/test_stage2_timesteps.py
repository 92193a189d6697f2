"""Stage 2's σ densities (uniform, logit-normal, mode) and the expert each draw feeds."""

import math

import pytest
import torch

from sara.config.stage2 import FlowConfig, Stage2ObjectiveConfig
from sara.models.presets import resolve
from sara.models.wan import load_transformers, read_layout
from sara.stage2.align import VfmView
from sara.stage2.objective import Stage2Model
from sara.stage2.timesteps import draw_in_range, draw_sigmas

DENSITIES = {
    "uniform": FlowConfig(shift=1.0),
    "logit_normal": FlowConfig(shift=1.0, density="logit_normal", logit_mean=0.5, logit_std=1.0),
    "mode": FlowConfig(shift=1.0, density="mode", mode_scale=1.29),
}


def sigmas(config, count=20000, seed=0):
    return draw_sigmas(config, count, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", DENSITIES)
def test_every_density_stays_in_the_unit_interval(name):
    sigma = sigmas(DENSITIES[name])
    assert sigma.min() >= 0 and sigma.max() <= 1 and sigma.std() > 0.1


def test_each_density_has_its_own_shape():
    uniform, logit, mode = (sigmas(c) for c in DENSITIES.values())
    assert abs(uniform.mean() - 0.5) < 0.01 and abs((uniform < 0.25).float().mean() - 0.25) < 0.01
    # logit-normal: the median is sigmoid(mean), and the ends are thin
    assert abs(logit.median() - 1 / (1 + math.exp(-0.5))) < 0.01
    assert (logit > 0.95).float().mean() < 0.03
    # mode: more mass in the middle than uniform, symmetric about 0.5; scale 0 is uniform
    middle = ((mode > 0.25) & (mode < 0.75)).float().mean()
    assert middle > 0.6 and abs(mode.mean() - 0.5) < 0.01
    flat = sigmas(FlowConfig(shift=1.0, density="mode", mode_scale=0.0))
    assert abs(((flat > 0.25) & (flat < 0.75)).float().mean() - 0.5) < 0.015


def test_the_shift_applies_after_the_density():
    config = FlowConfig(shift=3.0, density="logit_normal")
    shifted, plain = sigmas(config), sigmas(FlowConfig(shift=1.0, density="logit_normal"))
    assert torch.allclose(shifted, 3 * plain / (1 + 2 * plain))


def test_a_range_draw_is_the_density_restricted():
    config = DENSITIES["logit_normal"]
    inner = draw_in_range(config, 4000, torch.Generator().manual_seed(1), 0.2, 0.6)
    assert inner.min() >= 0.2 and inner.max() < 0.6
    full = sigmas(config)
    expected = full[(full >= 0.2) & (full < 0.6)].median()
    assert abs(inner.median() - expected) < 0.01


@pytest.fixture(scope="module")
def a14b(tmp_path_factory):
    return read_layout(resolve("tiny", "wan-a14b", tmp_path_factory.mktemp("models")))


def two_experts(layout, flow):
    config = Stage2ObjectiveConfig(flow=flow)
    config.align.mode = "sft"
    return Stage2Model(load_transformers(layout), layout, config, 24, VfmView(2, 16))


@pytest.mark.parametrize("name", DENSITIES)
def test_each_density_feeds_the_expert_that_owns_its_sigma(a14b, name):
    """A14B (boundary 0.875): every step trains one expert, with all of its σ in that
    expert's range, and the high-noise expert's share of steps is its mass under the density."""
    flow = FlowConfig(**{**DENSITIES[name].__dict__, "shift": 3.0})
    model = two_experts(a14b, flow)
    draws = [model.draw(torch.Size([4, 16, 3, 8, 8]), torch.Generator().manual_seed(s)) for s in range(600)]
    assert all(len(set(d["expert"].tolist())) == 1 for d in draws)
    high = [d for d in draws if d["expert"][0] == 0]
    assert all((d["sigma"] >= 0.875).all() for d in high)
    assert all((d["sigma"] < 0.875).all() for d in draws if d["expert"][0] == 1)
    share = (sigmas(flow, 100000) >= 0.875).float().mean().item()
    assert abs(len(high) / len(draws) - share) < 0.06


def test_a_density_that_starves_an_expert_is_refused(a14b):
    flow = FlowConfig(shift=1.0, density="logit_normal", logit_mean=-8.0, logit_std=0.5)
    model = two_experts(a14b, flow)
    with pytest.raises(ValueError, match=r"logit_normal density .* almost no mass on σ in \[0.875, 1.0\]"):
        model.draw(torch.Size([4, 16, 3, 8, 8]), torch.Generator().manual_seed(0), "high")
