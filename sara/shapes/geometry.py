"""Geometry of the shapes world: each kind's outline, its area, and drawing it as a mask.

Every kind is told apart from every other at any rotation, so a caption's shape word is
never ambiguous: the diamond is a rhombus with diagonals 1 : 0.6 (a square turned by 45°
would be the same shape as the square), and the cross replaces a hexagon that a circle of
the same area covers at IoU 0.93. At equal area the most alike pair is circle–square
(best IoU over all rotations 0.84; ``tests/test_data_synthetic.py`` checks every pair).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from sara.shapes.vocabulary import SHAPES

DIAMOND_WIDTH = 0.6  # the rhombus's short diagonal over its long one
CROSS_ARM = 0.3  # half the width of the cross's arms, as a share of its reach r


def outline(kind: str) -> list[tuple[float, float]] | None:
    """Vertices ``(x, y)`` of a kind of reach (circumradius) 1 at angle 0; ``None`` for the circle."""
    if kind == "circle":
        return None
    if kind == "square":
        return _regular(4, math.pi / 4)
    if kind == "triangle":
        return _regular(3, -math.pi / 2)
    if kind == "star":
        return [
            ((1.0 if i % 2 == 0 else 0.45) * math.cos(a), (1.0 if i % 2 == 0 else 0.45) * math.sin(a))
            for i, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))
        ]
    if kind == "diamond":
        return [(0.0, -1.0), (DIAMOND_WIDTH, 0.0), (0.0, 1.0), (-DIAMOND_WIDTH, 0.0)]
    if kind == "cross":
        a = CROSS_ARM
        quarter = [(-a, -1.0), (a, -1.0), (a, -a)]  # one arm's end and the corner after it
        return [(x * c - y * s, x * s + y * c) for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1)) for x, y in quarter]
    raise ValueError(f"shape kind {kind!r}; choose one of {', '.join(SHAPES)}")


def _regular(sides: int, offset: float) -> list[tuple[float, float]]:
    return [
        (math.cos(offset + i * 2 * math.pi / sides), math.sin(offset + i * 2 * math.pi / sides)) for i in range(sides)
    ]


def area(kind: str) -> float:
    """Area of a kind of reach 1 (shoelace formula; π for the circle)."""
    points = outline(kind)
    if points is None:
        return math.pi
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1])))


def draw(kind: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """A filled shape of reach ``r`` centred at ``(cx, cy)``, turned by ``angle``: ``bool [size, size]``."""
    return draw_many(kind, [(cx, cy, r, angle)], size)[0]


def draw_many(kind: str, poses: list[tuple[float, float, float, float]], size: int) -> np.ndarray:
    """The shape at each pose ``(cx, cy, r, angle)``: ``bool [P, size, size]``, drawn on one
    canvas of ``P`` stacked frames (one image conversion, not ``P``). With several poses each
    shape must lie within its frame's rows, or it would spill into the next."""
    if len(poses) > 1 and any(cy - r < 0 or cy + r > size for _, cy, r, _ in poses):
        raise ValueError(f"draw_many: a shape leaves its {size}-pixel frame; draw it alone")
    image = Image.new("1", (size, size * len(poses)), 0)
    canvas = ImageDraw.Draw(image)
    points = outline(kind)
    for i, (cx, cy, r, angle) in enumerate(poses):
        cy = cy + i * size  # the i-th frame of the canvas
        if points is None:
            canvas.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
            continue
        c, s = math.cos(angle), math.sin(angle)
        canvas.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points], fill=1)
    return np.array(image, dtype=bool).reshape(len(poses), size, size)
