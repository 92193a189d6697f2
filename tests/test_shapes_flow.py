"""Exact flow of shapes-world clips: translation of each shape's pixels, turning shapes carried
to where they are drawn next, the front shape's motion where shapes overlap, distractors moving,
a still background."""

import numpy as np

from sara.shapes import geometry
from sara.shapes.flow import exact_flow
from sara.shapes.render import SynthSpec, render_clip


def _facts(**spec) -> dict:
    clip = render_clip(SynthSpec(num=4, seed=3, frames=5, size=80, **spec), 0)
    return {"size": 80, **clip.facts}, clip


def test_translating_shapes_move_by_their_centres_and_the_background_stays():
    facts, clip = _facts(spin=0.0, min_entities=2, max_entities=2)
    flow = exact_flow(facts)
    assert flow.shape == (4, 80, 80, 2)
    covered = np.zeros((4, 80, 80), bool)
    for entity, visible in zip(facts["entities"], clip.masks):
        step = np.diff(np.asarray(entity["centres"]), axis=0)  # (T-1, 2)
        for t in range(4):
            np.testing.assert_allclose(
                flow[t][visible[t]], np.broadcast_to(step[t], flow[t][visible[t]].shape), atol=1e-4
            )
            covered[t] |= visible[t]
    assert not flow[~covered].any()


def test_turning_shapes_land_where_they_are_drawn_next():
    facts, _ = _facts(spin=0.3, min_entities=1, max_entities=1)
    entity = facts["entities"][0]
    flow = exact_flow(facts)
    yy, xx = np.mgrid[0:80, 0:80] + 0.5
    for t in range(4):
        here = geometry.draw(entity["kind"], *entity["centres"][t][::-1], entity["reach"], entity["angles"][t], 80)
        there = geometry.draw(
            entity["kind"], *entity["centres"][t + 1][::-1], entity["reach"], entity["angles"][t + 1], 80
        )
        y = np.clip(np.floor(yy[here] + flow[t][here][:, 0]).astype(int), 0, 79)
        x = np.clip(np.floor(xx[here] + flow[t][here][:, 1]).astype(int), 0, 79)
        assert there[y, x].mean() > 0.95  # rasterised edges aside, every pixel lands inside the shape
        assert np.abs(flow[t][here]).max() > np.abs(np.diff(entity["centres"], axis=0)[t]).max()  # turning adds motion


def test_distractors_move_and_named_shapes_cover_them():
    facts, clip = _facts(spin=0.0, min_entities=1, max_entities=1, distractors=2)
    flow = exact_flow(facts)
    named = clip.masks[0][0]
    step = np.diff(np.asarray(facts["entities"][0]["centres"]), axis=0)[0]
    np.testing.assert_allclose(flow[0][named], np.broadcast_to(step, flow[0][named].shape), atol=1e-4)
    moving_elsewhere = (np.abs(flow[0]).sum(-1) > 0) & ~named
    assert moving_elsewhere.sum() > 20  # the distractors' own pixels
