"""Exact optical flow of a shapes-world clip, from what the renderer knows.

Every shape of a clip — the distractors behind, then the named entities back to front, as the
renderer paints them — is drawn again from its record's facts (kind, reach, centre and angle
per frame). A pixel's flow from frame ``t`` to ``t + 1`` is the motion of the shape it shows
at ``t``: the shape's centre moves by ``c(t+1) − c(t)`` and it turns by ``a(t+1) − a(t)`` about
that centre, so the pixel at ``p`` goes to ``c(t+1) + R(Δa)(p − c(t))``. Background pixels do
not move. MoAlign's motion head learns to predict this (on real videos: an estimator's flow).
"""

from __future__ import annotations

import math

import numpy as np

from sara.shapes import geometry


def exact_flow(facts: dict) -> np.ndarray:
    """``float32 [T − 1, H, W, 2]``: each pixel's displacement ``(dy, dx)`` from frame ``t`` to
    ``t + 1``, for the ``render`` facts of a record (``size`` and the shapes' paths)."""
    size = facts["size"]
    shapes = [*facts.get("distractors", []), *facts["entities"]]  # painter's order: later ones in front
    frames = len(shapes[0]["centres"])
    flow = np.zeros((frames - 1, size, size, 2), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    for shape in shapes:
        centres, angles = np.asarray(shape["centres"]), np.asarray(shape["angles"])
        for t in range(frames - 1):
            (cy, cx), (ny, nx) = centres[t], centres[t + 1]
            mask = geometry.draw(shape["kind"], cx, cy, shape["reach"], angles[t], size)
            turn = angles[t + 1] - angles[t]
            c, s = math.cos(turn), math.sin(turn)
            dy, dx = yy[mask] - cy, xx[mask] - cx
            # the same rotation convention as geometry.draw: (x, y) -> (x c − y s, x s + y c)
            flow[t][mask] = np.stack([ny + dx * s + dy * c - yy[mask], nx + dx * c - dy * s - xx[mask]], axis=-1)
    return flow
